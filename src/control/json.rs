//! A small, strict JSON reader for the client side: `regent check` reads a
//! running daemon's `status json` with it, and the renderers' tests check
//! their output with it. It takes RFC 8259 JSON and refuses duplicate keys,
//! so that what it accepts every consumer reads the same way.
//!
//! Architecture Invariant: a pure function of its input. Text that is not
//! JSON, or nests deeper than [`MAX_DEPTH`], is an `Err`, never a panic.

/// A parsed JSON value; objects keep their key order.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Json {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

/// Arrays and objects nested deeper than this are refused: the status
/// nests three deep, and a bound keeps hostile text from exhausting the stack.
pub(crate) const MAX_DEPTH: usize = 32;

impl Json {
    /// Parses `text`, which must hold one value and nothing else but
    /// whitespace.
    pub(crate) fn parse(text: &str) -> Result<Json, String> {
        let mut p = Parser {
            s: text.as_bytes(),
            i: 0,
            depth: 0,
        };
        let v = p.value()?;
        p.ws();
        if p.i != p.s.len() {
            return Err(format!("trailing bytes at {}", p.i));
        }
        Ok(v)
    }

    /// The value of `key`, if this is an object that has it.
    pub(crate) fn field(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Obj(kv) => kv.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// A whole number from 0 to 2^53, exactly as written.
    pub(crate) fn as_u64(&self) -> Option<u64> {
        const EXACT: f64 = 9_007_199_254_740_992.0;
        match *self {
            Json::Num(n) if n.fract() == 0.0 && (0.0..=EXACT).contains(&n) => {
                // Whole and in range: the conversion is exact.
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                Some(n as u64)
            }
            _ => None,
        }
    }

    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Json::Str(s) => Some(s),
            _ => None,
        }
    }

    pub(crate) fn as_bool(&self) -> Option<bool> {
        match *self {
            Json::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// The items of an array.
    pub(crate) fn items(&self) -> Option<&[Json]> {
        match self {
            Json::Arr(items) => Some(items),
            _ => None,
        }
    }
}

/// For tests, where a missing key is a failure to report.
#[cfg(test)]
impl Json {
    pub(crate) fn get(&self, key: &str) -> &Json {
        match self {
            Json::Obj(_) => self
                .field(key)
                .unwrap_or_else(|| panic!("no key {key:?} in {self:?}")),
            other => panic!("{other:?} is not an object"),
        }
    }

    pub(crate) fn keys(&self) -> Vec<&str> {
        match self {
            Json::Obj(kv) => kv.iter().map(|(k, _)| k.as_str()).collect(),
            other => panic!("{other:?} is not an object"),
        }
    }
}

/// A recursive-descent parser over the bytes of a `str`; it splits the
/// input only at ASCII bytes, so every string it copies out is UTF-8.
struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    depth: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && b" \t\r\n".contains(&self.s[self.i]) {
            self.i += 1;
        }
    }

    fn eat(&mut self, lit: &str) -> Result<(), String> {
        if self.s[self.i..].starts_with(lit.as_bytes()) {
            self.i += lit.len();
            Ok(())
        } else {
            Err(format!("expected {lit:?} at {}", self.i))
        }
    }

    fn peek(&self) -> Result<u8, String> {
        self.s
            .get(self.i)
            .copied()
            .ok_or_else(|| "unexpected end".to_string())
    }

    fn value(&mut self) -> Result<Json, String> {
        self.ws();
        match self.peek()? {
            b'n' => self.eat("null").map(|()| Json::Null),
            b't' => self.eat("true").map(|()| Json::Bool(true)),
            b'f' => self.eat("false").map(|()| Json::Bool(false)),
            b'"' => self.string().map(Json::Str),
            b'[' => self.nested(Parser::array),
            b'{' => self.nested(Parser::object),
            b'-' | b'0'..=b'9' => self.number(),
            c => Err(format!("unexpected {:?} at {}", char::from(c), self.i)),
        }
    }

    /// Parses an array or object one level deeper, within [`MAX_DEPTH`].
    fn nested(&mut self, f: fn(&mut Self) -> Result<Json, String>) -> Result<Json, String> {
        if self.depth == MAX_DEPTH {
            return Err(format!("nested deeper than {MAX_DEPTH} at {}", self.i));
        }
        self.depth += 1;
        let v = f(self);
        self.depth -= 1;
        v
    }

    fn array(&mut self) -> Result<Json, String> {
        self.eat("[")?;
        let mut items = Vec::new();
        self.ws();
        if self.peek()? == b']' {
            self.i += 1;
            return Ok(Json::Arr(items));
        }
        loop {
            items.push(self.value()?);
            self.ws();
            match self.peek()? {
                b',' => self.i += 1,
                b']' => {
                    self.i += 1;
                    return Ok(Json::Arr(items));
                }
                c => return Err(format!("unexpected {:?} in array", char::from(c))),
            }
        }
    }

    fn object(&mut self) -> Result<Json, String> {
        self.eat("{")?;
        let mut kv: Vec<(String, Json)> = Vec::new();
        self.ws();
        if self.peek()? == b'}' {
            self.i += 1;
            return Ok(Json::Obj(kv));
        }
        loop {
            self.ws();
            let k = self.string()?;
            if kv.iter().any(|(old, _)| *old == k) {
                return Err(format!("duplicate key {k:?}"));
            }
            self.ws();
            self.eat(":")?;
            kv.push((k, self.value()?));
            self.ws();
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    return Ok(Json::Obj(kv));
                }
                c => return Err(format!("unexpected {:?} in object", char::from(c))),
            }
        }
    }

    fn number(&mut self) -> Result<Json, String> {
        let start = self.i;
        while self.i < self.s.len() && b"+-.eE0123456789".contains(&self.s[self.i]) {
            self.i += 1;
        }
        // ASCII only, so UTF-8.
        let text = std::str::from_utf8(&self.s[start..self.i]).map_err(|e| e.to_string())?;
        let digits = text.strip_prefix('-').unwrap_or(text);
        if digits.len() > 1 && digits.starts_with('0') && !digits.starts_with("0.") {
            return Err(format!("leading zero in {text}"));
        }
        if !digits.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(format!("{text} is not a number"));
        }
        text.parse()
            .map(Json::Num)
            .map_err(|e| format!("{text}: {e}"))
    }

    fn string(&mut self) -> Result<String, String> {
        self.eat("\"")?;
        let mut out = Vec::new();
        loop {
            let b = self.peek().map_err(|_| "unterminated string".to_string())?;
            self.i += 1;
            match b {
                b'"' => {
                    // Split only at ASCII bytes of UTF-8 input: still UTF-8.
                    return String::from_utf8(out).map_err(|e| e.to_string());
                }
                b'\\' => {
                    let e = self.peek()?;
                    self.i += 1;
                    let c = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'u' => {
                            let hex = self
                                .s
                                .get(self.i..self.i + 4)
                                .and_then(|h| std::str::from_utf8(h).ok())
                                .ok_or("short \\u escape")?;
                            let n = u32::from_str_radix(hex, 16).map_err(|e| e.to_string())?;
                            self.i += 4;
                            char::from_u32(n).ok_or("a surrogate in a \\u escape")?
                        }
                        e => return Err(format!("bad escape \\{}", char::from(e))),
                    };
                    let mut buf = [0; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
                b if b < 0x20 => return Err("raw control character in a string".into()),
                b => out.push(b),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse() {
        let v =
            Json::parse(" {\"a\": [1, -2.5e1, true, null], \"b\": \"x\\u00e9\\n\", \"c\": {}} ")
                .expect("valid");
        assert_eq!(
            v.field("a").and_then(Json::items),
            Some(
                &[
                    Json::Num(1.0),
                    Json::Num(-25.0),
                    Json::Bool(true),
                    Json::Null
                ][..]
            )
        );
        assert_eq!(v.field("b").and_then(Json::as_str), Some("xé\n"));
        assert_eq!(v.field("c"), Some(&Json::Obj(Vec::new())));
        assert_eq!(v.field("d"), None);
        assert_eq!(Json::Num(7.0).as_u64(), Some(7));
        assert_eq!(Json::Num(7.5).as_u64(), None);
        assert_eq!(Json::Num(-1.0).as_u64(), None);
        assert_eq!(Json::parse("\"é\"").expect("utf-8"), Json::Str("é".into()));
    }

    #[test]
    fn what_is_not_json_is_an_error_not_a_panic() {
        let deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        let ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(Json::parse(&ok).is_ok());
        for bad in [
            "",
            "{",
            "[1,",
            "{\"a\":1,\"a\":2}",
            "01",
            "-",
            "+1",
            ".5",
            "\"\\u12\"",
            "\"\\ud800\"",
            "\"a\nb\"",
            "\"abc",
            "\"\\",
            "nul",
            "1 2",
            "{1:2}",
            &deep,
        ] {
            assert!(Json::parse(bad).is_err(), "accepted {bad:?}");
        }
    }
}
