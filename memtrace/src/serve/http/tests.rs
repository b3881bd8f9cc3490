//! The server on loopback with real sockets: routes, errors, limits, abuse and shutdown.
//! Timings are generous (other tests and workloads may share the machine): "promptly" means
//! well within a second or two, while the abusive clients take many seconds.

use std::{
    io::{Read as _, Write as _},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    sync::atomic::AtomicUsize,
    time::{Duration, Instant},
};

use super::*;

const METRICS: &str = "# HELP up Whether it is up.\n# TYPE up gauge\nup 1\n";

fn routes() -> Routes {
    Routes::new()
        .get("/metrics", |_req| {
            Response::text(200, METRICS).with_header("X-Test", "yes\r\nInjected: no")
        })
        .get("/echo", |req| {
            Response::text(
                200,
                format!(
                    "{:?} {} {:?} ua={:?} a={:?}",
                    req.method,
                    req.path,
                    req.query,
                    req.header("user-agent"),
                    req.query_param("a"),
                ),
            )
        })
        .get("/panic", |_req| panic!("handler bug"))
}

fn config(name: &str) -> ServerConfig {
    ServerConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        thread_name: name.to_string(),
        ..ServerConfig::default()
    }
}

fn start(config: ServerConfig, routes: Routes) -> Server {
    Server::start(config, routes).expect("server starts on a free loopback port")
}

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn parse_reply(raw: &[u8]) -> Reply {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of headers in {:?}", String::from_utf8_lossy(raw)));
    let head = std::str::from_utf8(&raw[..end]).expect("UTF-8 head");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("status line");
    let mut parts = status_line.splitn(3, ' ');
    assert_eq!(parts.next(), Some("HTTP/1.1"), "{status_line}");
    let status = parts
        .next()
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let headers = lines
        .map(|l| {
            let (n, v) = l.split_once(':').expect("header line");
            (n.to_string(), v.trim().to_string())
        })
        .collect();
    Reply {
        status,
        headers,
        body: raw[end + 4..].to_vec(),
    }
}

/// Connects, sends `raw`, reads until the server closes (10 s at most).
fn exchange(addr: SocketAddr, raw: &[u8]) -> Reply {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    // The server may answer (and stop reading) before an oversized request is all sent.
    let _ = stream.write_all(raw);
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    parse_reply(&out)
}

fn get(addr: SocketAddr, path: &str) -> Reply {
    exchange(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: test\r\nUser-Agent: t/1\r\n\r\n").as_bytes(),
    )
}

/// Threads of this process with that name once the joined ones are gone: a joined thread has
/// ended, but its `/proc/self/task` entry can outlive the join by a moment (the kernel wakes
/// the joiner as the thread releases its memory, before the task is reaped).
fn threads_left(name: &str) -> usize {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let n = threads_named(name);
        if n == 0 || Instant::now() >= deadline {
            return n;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// Threads of this process with that name (`/proc/self/task/*/comm`).
fn threads_named(name: &str) -> usize {
    let comm = &name[..name.len().min(15)];
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|e| e.ok())
        .filter(|e| {
            std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim_end() == comm)
        })
        .count()
}

#[test]
fn routes_methods_and_errors() {
    let server = start(config("http-routes"), routes());
    let addr = server.local_addr();

    let r = get(addr, "/metrics");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), METRICS);
    assert_eq!(
        r.header("content-length"),
        Some(&*METRICS.len().to_string())
    );
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    // A CR LF in a header value cannot start another header.
    assert_eq!(r.header("x-test"), Some("yes  Injected: no"));
    assert_eq!(r.header("injected"), None);

    let r = exchange(addr, b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-length"),
        Some(&*METRICS.len().to_string())
    );
    assert!(r.body.is_empty(), "HEAD has no body: {:?}", r.text());

    let r = get(addr, "/echo?a=1&b");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.text(),
        "Get /echo Some(\"a=1&b\") ua=Some(\"t/1\") a=Some(\"1\")"
    );
    // Absolute-form target, HTTP/1.0, bare LF line ends.
    let r = exchange(
        addr,
        b"GET http://h:1/echo?a=2 HTTP/1.0\nUser-Agent: lf\n\n",
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        r.text(),
        "Get /echo Some(\"a=2\") ua=Some(\"lf\") a=Some(\"2\")"
    );

    let r = get(addr, "/nope");
    assert_eq!(r.status, 404);
    assert!(r.text().contains("/metrics, /echo, /panic"), "{}", r.text());
    // Paths match exactly.
    assert_eq!(get(addr, "/metrics/").status, 404);
    assert_eq!(get(addr, "/METRICS").status, 404);

    for method in [
        "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT", "BREW",
    ] {
        let r = exchange(
            addr,
            format!("{method} /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc").as_bytes(),
        );
        assert_eq!(r.status, 405, "{method}");
        assert_eq!(r.header("allow"), Some("GET, HEAD"), "{method}");
    }
    assert_eq!(exchange(addr, b"GET /metrics HTTP/2.0\r\n\r\n").status, 505);
    // The HTTP/2 connection preface.
    assert_eq!(
        exchange(addr, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").status,
        505
    );
    for bad in [
        &b"GET /metrics\r\n\r\n"[..],
        b"GET  /metrics HTTP/1.1\r\n\r\n",
        b"GET metrics HTTP/1.1\r\n\r\n",
        b"G(T /metrics HTTP/1.1\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nno colon\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nA: b\r\n folded\r\n\r\n",
        b"GET /\x01 HTTP/1.1\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
    ] {
        let r = exchange(addr, bad);
        assert_eq!(
            r.status,
            400,
            "{:?}: {}",
            String::from_utf8_lossy(bad),
            r.text()
        );
    }
    let r = get(addr, "/panic");
    assert_eq!(r.status, 500);
    // The server survived every one of them.
    assert_eq!(get(addr, "/metrics").status, 200);
    let stats = server.shutdown();
    assert!(stats.bad_requests >= 18, "{stats:?}");
    assert_eq!(stats.open_connections, 0);
}

#[test]
fn oversized_request_line_and_headers() {
    let server = start(config("http-oversize"), routes());
    let addr = server.local_addr();
    let long_path = "a".repeat(9000);
    let r = exchange(
        addr,
        format!("GET /{long_path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
    );
    assert_eq!(r.status, 414);
    let long_header = format!("X-Big: {}\r\n", "b".repeat(200)).repeat(50);
    let r = exchange(
        addr,
        format!("GET /metrics HTTP/1.1\r\n{long_header}\r\n").as_bytes(),
    );
    assert_eq!(r.status, 431);
    // Just under the limit is fine.
    let fits = format!("X-Big: {}\r\n", "b".repeat(7000));
    let r = exchange(
        addr,
        format!("GET /metrics HTTP/1.1\r\n{fits}\r\n").as_bytes(),
    );
    assert_eq!(r.status, 200);
    // A huge request line sent by a client that never stops: answered and cut off, while the
    // server goes on serving.
    let mut flood = TcpStream::connect(addr).expect("connect");
    flood
        .set_write_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let _ = flood.write_all(b"GET /");
    let junk = vec![b'x'; 64 * 1024];
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(5) {
        if flood.write_all(&junk).is_err() {
            break;
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the server kept reading an endless request line"
    );
    assert_eq!(get(addr, "/metrics").status, 200);
    let stats = server.shutdown();
    assert!(stats.bad_requests >= 3, "{stats:?}");
}

#[test]
fn idle_connections_do_not_block_metrics() {
    // Idle connections are kept for the whole test (by default they would time out after 2 s).
    let server = start(
        ServerConfig {
            read_timeout: Duration::from_secs(60),
            request_deadline: Duration::from_secs(60),
            ..config("http-idle")
        },
        routes(),
    );
    let addr = server.local_addr();
    let idle: Vec<TcpStream> = (0..100)
        .map(|_| TcpStream::connect(addr).expect("idle connect"))
        .collect();
    // Let the server take them all.
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.stats().accepted < 100 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(server.stats().open_connections, 100);
    let started = Instant::now();
    let r = get(addr, "/metrics");
    let took = started.elapsed();
    assert_eq!(r.status, 200);
    assert!(took < Duration::from_secs(1), "/metrics took {took:?}");
    drop(idle);
    server.shutdown();
}

#[test]
fn at_the_limit_the_oldest_idle_connection_makes_room() {
    let server = start(
        ServerConfig {
            max_connections: 8,
            ..config("http-evict")
        },
        routes(),
    );
    let addr = server.local_addr();
    let mut idle: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(addr).expect("idle connect"))
        .collect();
    for _ in 0..5 {
        let started = Instant::now();
        let r = get(addr, "/metrics");
        assert_eq!(r.status, 200);
        assert!(started.elapsed() < Duration::from_secs(1));
    }
    let stats = server.stats();
    assert!(stats.evicted >= 12, "{stats:?}");
    assert!(stats.open_connections <= 8, "{stats:?}");
    // The first idle connection was among the evicted: closed by the server.
    idle[0]
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut buf = [0u8; 16];
    assert!(matches!(idle[0].read(&mut buf), Ok(0) | Err(_)));
    idle.clear();
    server.shutdown();
}

#[test]
fn busy_slots_answer_503_without_blocking() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let slow = Routes::new().get("/slow", move |_req| {
        counted.fetch_add(1, Ordering::SeqCst);
        // Only a test handler sleeps: real handlers read a published snapshot.
        thread::sleep(Duration::from_millis(1500));
        Response::text(200, "done\n")
    });
    let server = start(
        ServerConfig {
            max_connections: 2,
            ..config("http-busy")
        },
        slow,
    );
    let addr = server.local_addr();
    let busy: Vec<_> = (0..2)
        .map(|_| thread::spawn(move || get(addr, "/slow")))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    while calls.load(Ordering::SeqCst) < 2 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    let started = Instant::now();
    let r = get(addr, "/slow");
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(started.elapsed() < Duration::from_millis(1000));
    for t in busy {
        assert_eq!(t.join().expect("client").status, 200);
    }
    let stats = server.shutdown();
    assert_eq!(stats.rejected_busy, 1, "{stats:?}");
}

#[test]
fn slow_client_does_not_delay_another() {
    let server = start(config("http-slow"), routes());
    let addr = server.local_addr();
    let slow = thread::spawn(move || {
        let mut stream = TcpStream::connect(addr).expect("connect");
        let request =
            b"GET /metrics HTTP/1.1\r\nHost: slow.example\r\nUser-Agent: slowloris\r\n\r\n";
        // One byte every 200 ms; the wait between two bytes is a read, so the answer is taken
        // as soon as the server gives one.
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let started = Instant::now();
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        for byte in request {
            if stream.write_all(&[*byte]).is_err() {
                break;
            }
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    out.extend_from_slice(&buf[..n]);
                    break;
                }
                Err(_) => {}
            }
        }
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let _ = stream.read_to_end(&mut out);
        (started.elapsed(), out)
    });
    thread::sleep(Duration::from_millis(500));
    for _ in 0..10 {
        let started = Instant::now();
        assert_eq!(get(addr, "/metrics").status, 200);
        let took = started.elapsed();
        assert!(took < Duration::from_secs(1), "/metrics took {took:?}");
        thread::sleep(Duration::from_millis(200));
    }
    let (took, out) = slow.join().expect("slow client");
    // 68 bytes at 5 a second would take 13.6 s: the request deadline (5 s) cut it off with 408.
    let reply = parse_reply(&out);
    assert_eq!(reply.status, 408, "{}", reply.text());
    assert!(took < Duration::from_secs(10), "{took:?}");
    let stats = server.shutdown();
    assert_eq!(stats.timed_out, 1, "{stats:?}");
}

#[test]
fn silent_client_times_out() {
    let server = start(
        ServerConfig {
            read_timeout: Duration::from_millis(300),
            ..config("http-silent")
        },
        routes(),
    );
    let mut stream = TcpStream::connect(server.local_addr()).expect("connect");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\n")
        .expect("write");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let started = Instant::now();
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    assert_eq!(parse_reply(&out).status, 408);
    assert!(started.elapsed() < Duration::from_secs(2));
    server.shutdown();
}

#[test]
fn slow_reader_is_cut_off_and_others_are_served() {
    let big: Body = vec![b'x'; 64 << 20].into();
    let body = Arc::clone(&big);
    let big_routes = routes().get("/big", move |_req| {
        Response::new(200, "application/octet-stream", Arc::clone(&body))
    });
    let server = start(
        ServerConfig {
            response_deadline: Duration::from_secs(1),
            ..config("http-reader")
        },
        big_routes,
    );
    let addr = server.local_addr();
    // Asks for 64 MiB and never reads them.
    let mut lazy = TcpStream::connect(addr).expect("connect");
    lazy.write_all(b"GET /big HTTP/1.1\r\n\r\n").expect("write");
    thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    assert_eq!(get(addr, "/metrics").status, 200);
    assert!(started.elapsed() < Duration::from_secs(1));
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.stats().responses_abandoned == 0 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    let stats = server.shutdown();
    assert_eq!(stats.responses_abandoned, 1, "{stats:?}");
    drop(lazy);
    // A reader that takes the whole thing gets every byte.
    let server = start(
        config("http-reader2"),
        routes().get("/big", move |_req| {
            Response::new(200, "application/octet-stream", Arc::clone(&big))
        }),
    );
    let r = get(server.local_addr(), "/big");
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 64 << 20);
    server.shutdown();
}

#[test]
fn shutdown_closes_connections_and_joins_every_thread() {
    const NAME: &str = "http-shutdown-t";
    let server = start(
        ServerConfig {
            read_timeout: Duration::from_secs(60),
            request_deadline: Duration::from_secs(60),
            ..config(NAME)
        },
        routes(),
    );
    let addr = server.local_addr();
    assert_eq!(get(addr, "/metrics").status, 200);
    let idle: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(addr).expect("idle connect"))
        .collect();
    let mut half = TcpStream::connect(addr).expect("connect");
    half.write_all(b"GET /metr").expect("write");
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.stats().open_connections < 21 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    assert!(
        threads_named(NAME) >= 22,
        "accept thread and 21 connections"
    );
    let started = Instant::now();
    let stats = server.shutdown();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(stats.open_connections, 0);
    assert_eq!(threads_left(NAME), 0, "every server thread was joined");
    // The connections were closed by the server, and the port is free again.
    half.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let mut buf = [0u8; 16];
    assert!(matches!(half.read(&mut buf), Ok(0) | Err(_)));
    drop(idle);
    assert!(TcpStream::connect(addr).is_err(), "still accepting");
    let again = TcpListener::bind(addr).expect("the port is free after shutdown");
    drop(again);
    let _ = half.shutdown(Shutdown::Both);
}

#[test]
fn drop_shuts_down_too() {
    const NAME: &str = "http-drop-test";
    let server = start(config(NAME), routes());
    let addr = server.local_addr();
    let _idle = TcpStream::connect(addr).expect("connect");
    drop(server);
    assert_eq!(threads_left(NAME), 0);
    assert!(TcpStream::connect(addr).is_err());
}

#[test]
fn taken_address_is_a_one_line_error_naming_the_fix() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let err = Server::start(
        ServerConfig {
            listen: addr,
            ..config("http-taken")
        },
        routes(),
    )
    .expect_err("the port is taken");
    assert!(matches!(err, ServeError::AddressInUse { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(&addr.to_string()) && msg.contains("--listen"),
        "{msg}"
    );
    assert!(!msg.contains('\n'));

    let err = Server::start(
        ServerConfig {
            listen: "192.0.2.1:9465".parse().expect("addr"),
            ..config("http-notmine")
        },
        routes(),
    )
    .expect_err("not an address of this host");
    assert!(
        matches!(err, ServeError::AddressNotAvailable { .. }),
        "{err:?}"
    );
}

#[test]
fn listen_values() {
    assert_eq!(
        parse_listen(DEFAULT_LISTEN).expect("default"),
        SocketAddr::from(([127, 0, 0, 1], 9465))
    );
    assert_eq!(ServerConfig::default().listen.to_string(), DEFAULT_LISTEN);
    assert_eq!(
        parse_listen("0.0.0.0:80").expect("any").to_string(),
        "0.0.0.0:80"
    );
    assert_eq!(
        parse_listen("[::1]:9465").expect("v6").to_string(),
        "[::1]:9465"
    );
    assert_eq!(
        parse_listen("localhost:9000").expect("localhost"),
        SocketAddr::from(([127, 0, 0, 1], 9000))
    );
    for bad in [
        "9465",
        ":9465",
        "example.com:80",
        "127.0.0.1",
        "127.0.0.1:99999",
        "",
    ] {
        let err = parse_listen(bad).expect_err(bad);
        assert!(err.to_string().contains("ADDRESS:PORT"), "{err}");
    }
}

#[test]
fn request_parsing() {
    assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\n"), Some(18));
    assert_eq!(head_end(b"GET / HTTP/1.1\n\n"), Some(16));
    assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n"), None);
    assert_eq!(head_end(b"\r\n"), None);
    let req =
        parse_request(b"HEAD /a?x=1#frag HTTP/1.1\r\nHost: h\r\nX-Y:  z \r\n\r\n").expect("parses");
    assert_eq!(req.method, Method::Head);
    assert_eq!(req.path, "/a");
    assert_eq!(req.query.as_deref(), Some("x=1"));
    assert_eq!(req.header("x-y"), Some("z"));
    assert_eq!(req.header("HOST"), Some("h"));
    assert_eq!(
        check_request_line(b"DELETE / HTTP/1.1"),
        Err(RequestError::MethodNotAllowed)
    );
    assert_eq!(
        check_request_line(b"GET / HTTP/3"),
        Err(RequestError::VersionNotSupported)
    );
    assert!(matches!(
        check_request_line(b"GET / FTP/1.0"),
        Err(RequestError::Bad(_))
    ));
}

/// `SigBlk` of every thread of this process with that name.
fn blocked_signals_of(name: &str) -> Vec<u64> {
    let comm = &name[..name.len().min(15)];
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|e| e.ok())
        .filter(|e| {
            std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim_end() == comm)
        })
        .filter_map(|e| {
            let status = std::fs::read_to_string(e.path().join("status")).ok()?;
            let line = status.lines().find(|l| l.starts_with("SigBlk:"))?;
            u64::from_str_radix(line["SigBlk:".len()..].trim(), 16).ok()
        })
        .collect()
}

#[test]
fn server_threads_never_take_sigint_or_sigterm() {
    const NAME: &str = "http-signals-t";
    let server = start(config(NAME), routes());
    let addr = server.local_addr();
    // A connection thread too (spawned by the accepting thread).
    let mut open = TcpStream::connect(addr).expect("connect");
    open.write_all(b"GET /metr").expect("write");
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.stats().open_connections < 1 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    let masks = blocked_signals_of(NAME);
    assert!(masks.len() >= 2, "accept and connection threads: {masks:?}");
    let wanted = (1u64 << (libc::SIGINT - 1)) | (1u64 << (libc::SIGTERM - 1));
    for m in &masks {
        assert_eq!(m & wanted, wanted, "SigBlk {m:x} lets SIGINT/SIGTERM in");
    }
    // The caller's own mask is what it was.
    let mut mine: libc::sigset_t = empty_sigset();
    // SAFETY: reads this thread's mask into `mine`.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut mine) };
    // SAFETY: `mine` was filled by pthread_sigmask.
    assert_eq!(unsafe { libc::sigismember(&mine, libc::SIGTERM) }, 0);
    drop(open);
    server.shutdown();
}

fn empty_sigset() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; all zeroes is the empty set.
    unsafe { std::mem::zeroed() }
}
