//! The optional HTTP endpoint that serves `GET /metrics` to Prometheus.
//!
//! Just enough HTTP/1.1 for a scraper: read the request head, answer, close.
//! No keep-alive, no body, no chunking.
//!
//! Architecture Invariant: it listens on loopback only (metrics are served
//! without authentication), and it never blocks the loop or reads a clock.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::time::Instant;

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};

use super::conn::{ClientId, Conns, Frame};
use super::{IO_TIMEOUT, MAX_CLIENTS};

/// The longest request head read, in bytes.
pub const HEAD_MAX_BYTES: usize = 4096;

/// A plain-text response with `Connection: close`.
fn response(status: &str, content_type: &str, extra: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         {extra}Connection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn error(status: &str, body: &str) -> Frame<()> {
    Frame::Reject(response(
        status,
        "text/plain; charset=utf-8",
        "",
        &format!("{body}\n"),
    ))
}

/// Frames an HTTP request head; a complete `GET /metrics` becomes a request.
fn frame_head(input: &[u8], eof: bool) -> Frame<()> {
    let end = input
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .or_else(|| input.windows(2).position(|w| w == b"\n\n"));
    let Some(end) = end else {
        if input.len() >= HEAD_MAX_BYTES {
            return error(
                "431 Request Header Fields Too Large",
                "request head too large",
            );
        }
        if eof && !input.is_empty() {
            return error("400 Bad Request", "incomplete request");
        }
        return Frame::Incomplete;
    };
    let head = String::from_utf8_lossy(&input[..end]);
    let request_line = head.lines().next().unwrap_or("");
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return error("400 Bad Request", "malformed request line");
    };
    if !version.starts_with("HTTP/1.") {
        return error("505 HTTP Version Not Supported", "HTTP/1.x only");
    }
    let path = target.split(['?', '#']).next().unwrap_or(target);
    match (method, path) {
        ("GET", "/metrics") => Frame::Request(()),
        (_, "/metrics") => Frame::Reject(response(
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "Allow: GET\r\n",
            "GET only\n",
        )),
        _ => error("404 Not Found", "regent serves /metrics only"),
    }
}

/// Serves `GET /metrics` over HTTP on a loopback address, for the driver's
/// mio loop.
///
/// Tokens: the listener has `token_base`, connections the next
/// [`MAX_CLIENTS`]; together [`MetricsHttp::TOKENS`] tokens.
#[derive(Debug)]
pub struct MetricsHttp {
    listener: TcpListener,
    token: Token,
    conns: Conns<TcpStream>,
}

impl MetricsHttp {
    /// How many tokens from `token_base` on the server uses.
    pub const TOKENS: usize = 1 + MAX_CLIENTS;

    /// Listens on `addr`, which must be a loopback address, and registers
    /// the listener with `token_base`.
    pub fn bind(
        addr: SocketAddr,
        registry: &Registry,
        token_base: usize,
    ) -> io::Result<MetricsHttp> {
        if !addr.ip().is_loopback() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("metrics address {addr} is not a loopback address"),
            ));
        }
        let mut listener = TcpListener::bind(addr)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
        let token = Token(token_base);
        registry.register(&mut listener, token, Interest::READABLE)?;
        Ok(MetricsHttp {
            listener,
            token,
            conns: Conns::new(token_base + 1, MAX_CLIENTS, HEAD_MAX_BYTES, IO_TIMEOUT),
        })
    }

    /// The address listened on (with the port the kernel chose for port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Whether `t` is one of this server's tokens.
    pub fn owns_token(&self, t: Token) -> bool {
        t == self.token || self.conns.owns_token(t)
    }

    /// Handles a readiness event; returns the clients that asked for
    /// metrics. Answer each with [`MetricsHttp::reply`].
    pub fn on_event(&mut self, t: Token, registry: &Registry, now: Instant) -> Vec<ClientId> {
        if t == self.token {
            self.accept(registry, now);
            return Vec::new();
        }
        self.conns
            .on_event(t, registry, frame_head)
            .map(|(id, ())| id)
            .into_iter()
            .collect()
    }

    /// Answers `200 OK` with the rendered metrics, then closes.
    pub fn reply(&mut self, client: ClientId, metrics: &str, registry: &Registry, now: Instant) {
        let answer = response(
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            "",
            metrics,
        );
        self.conns.reply(client, answer, registry, now);
    }

    /// When a client's read or write deadline ends, if one is pending.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.conns.next_timeout()
    }

    /// Closes the clients whose deadline has passed.
    pub fn on_timeout(&mut self, now: Instant, registry: &Registry) {
        self.conns.on_timeout(now, registry);
    }

    /// Closes every connection and the listener.
    pub fn close_all(&mut self, registry: &Registry) {
        self.conns.close_all(registry);
        if let Err(e) = registry.deregister(&mut self.listener) {
            log::debug!("metrics: deregister the listener: {e}");
        }
    }

    fn accept(&mut self, registry: &Registry, now: Instant) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if let Err(mut stream) = self.conns.insert(stream, registry, now) {
                        let _ = stream.write(&response(
                            "503 Service Unavailable",
                            "text/plain; charset=utf-8",
                            "",
                            "busy\n",
                        ));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::warn!("metrics: accept: {e}");
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpStream as StdStream;
    use std::thread;
    use std::time::Duration;

    #[allow(clippy::disallowed_methods)] // the test's own clock
    fn clock() -> Instant {
        Instant::now()
    }

    /// Sends `raw` from a client thread while a loop serves; returns the answer.
    fn exchange(raw: &'static [u8]) -> (String, usize) {
        let mut poll = mio::Poll::new().expect("poll");
        let mut server =
            MetricsHttp::bind("127.0.0.1:0".parse().expect("addr"), poll.registry(), 0)
                .expect("bind");
        let addr = server.local_addr().expect("local addr");
        let client = thread::spawn(move || {
            let mut s = StdStream::connect(addr).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            s.write_all(raw).expect("write");
            let mut answer = String::new();
            s.read_to_string(&mut answer).expect("read");
            answer
        });
        let mut asked = 0;
        let mut events = mio::Events::with_capacity(16);
        let deadline = clock() + Duration::from_secs(10);
        while !client.is_finished() {
            assert!(clock() < deadline, "the loop did not finish");
            poll.poll(&mut events, Some(Duration::from_millis(10)))
                .expect("poll");
            for ev in &events {
                assert!(server.owns_token(ev.token()));
                for c in server.on_event(ev.token(), poll.registry(), clock()) {
                    asked += 1;
                    server.reply(c, "regent_up{cluster=\"x\"} 1\n", poll.registry(), clock());
                }
            }
        }
        server.close_all(poll.registry());
        (client.join().expect("client"), asked)
    }

    #[test]
    fn get_metrics() {
        let (answer, asked) =
            exchange(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n");
        assert_eq!(asked, 1);
        assert_eq!(
            answer,
            "HTTP/1.1 200 OK\r\n\
             Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
             Content-Length: 25\r\n\
             Connection: close\r\n\
             \r\n\
             regent_up{cluster=\"x\"} 1\n"
        );
    }

    #[test]
    fn other_requests() {
        let cases: [(&[u8], &str); 4] = [
            (b"GET / HTTP/1.1\r\n\r\n", "HTTP/1.1 404 Not Found\r\n"),
            (
                b"POST /metrics HTTP/1.1\r\n\r\n",
                "HTTP/1.1 405 Method Not Allowed\r\n",
            ),
            (b"GET /metrics\r\n\r\n", "HTTP/1.1 400 Bad Request\r\n"),
            (b"GET /metrics HTTP/2\r\n\r\n", "HTTP/1.1 505 "),
        ];
        for (raw, want) in cases {
            let (answer, asked) = exchange(raw);
            assert!(answer.starts_with(want), "{answer:?}");
            assert_eq!(asked, 0, "{answer:?}");
        }
    }

    #[test]
    fn framing() {
        assert_eq!(
            frame_head(b"GET /metrics HTTP/1.1\r\n", false),
            Frame::Incomplete
        );
        assert_eq!(
            frame_head(b"GET /metrics?x=1 HTTP/1.0\n\n", false),
            Frame::Request(())
        );
        let big = [b'a'; HEAD_MAX_BYTES];
        let Frame::Reject(r) = frame_head(&big, false) else {
            panic!("an oversized head is rejected")
        };
        assert!(r.starts_with(b"HTTP/1.1 431 "));
        let Frame::Reject(r) = frame_head(b"GET /metrics HTTP/1.1\r\n", true) else {
            panic!("a head cut short is rejected")
        };
        assert!(r.starts_with(b"HTTP/1.1 400 "));
    }

    #[test]
    fn loopback_only() {
        let poll = mio::Poll::new().expect("poll");
        let e = MetricsHttp::bind("0.0.0.0:0".parse().expect("addr"), poll.registry(), 0)
            .expect_err("not loopback");
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }
}
