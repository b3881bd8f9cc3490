//! A small, read-only HTTP/1.1 server on std (`TcpListener` and threads, no async runtime), for
//! `memtrace serve`'s `/metrics`, `/debug/pprof/heap`, `/report.json` and `/healthz`.
//!
//! What it does, and what it refuses:
//!
//! - **Read-only**: `GET` and `HEAD` only (`HEAD`: the `GET` response without its body); any
//!   other method is `405 Method Not Allowed` with `Allow: GET, HEAD`. Request bodies are never
//!   read. Paths are matched exactly (no percent-decoding, no prefixes): [`Routes`].
//! - **One request per connection**: every response carries `Connection: close`, and the server
//!   closes after it (no keep-alive, no pipelining). Scrapers open one connection per scrape.
//! - **Bounded**: the request line and headers together at most
//!   [`ServerConfig::max_request_bytes`] (8 KiB): `414 URI Too Long` when the request line alone
//!   does not fit, `431 Request Header Fields Too Large` otherwise; a connection that sends
//!   nothing for [`ServerConfig::read_timeout`] or has not sent a whole request within
//!   [`ServerConfig::request_deadline`] gets `408 Request Timeout`; a response not taken by the
//!   client within [`ServerConfig::response_deadline`] is abandoned. At most
//!   [`ServerConfig::max_connections`] connections are open at once, each served by its own
//!   thread: at the limit, the oldest connection that is still sending its request is closed to
//!   make room (idle or slow clients cannot lock others out), and when every open connection is
//!   already being answered, the new one gets `503 Service Unavailable` (written without
//!   blocking by the accepting thread) and is closed.
//! - **Never blocks the publisher**: handlers only read an already-rendered snapshot (see
//!   [`super::Latest`]); the server never holds a lock while it talks to a client.
//! - **No compression of its own**: bodies go out as the handler made them (the pprof profile is
//!   gzipped by its format, and served as such).
//! - **Shutdown**: [`Server::shutdown`] (or dropping the [`Server`]) sets a stop flag, wakes the
//!   accepting thread through a socket pair, closes every open connection and joins every
//!   thread.
//!
//! There is no TLS and no authentication: bind to loopback (the default, [`DEFAULT_LISTEN`]) or
//! put the endpoint behind a NetworkPolicy or kube-rbac-proxy (`deploy/README.md`).

use std::{
    borrow::Cow,
    collections::HashMap,
    fmt,
    io::{self, Read as _, Write as _},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs as _},
    os::{
        fd::{AsRawFd as _, RawFd},
        unix::net::UnixStream,
    },
    panic::{self, AssertUnwindSafe},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, MutexGuard, PoisonError,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

/// Where `memtrace serve` listens unless `--listen` says otherwise: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9465";

/// Methods other than these are answered with 405.
pub const ALLOWED_METHODS: &str = "GET, HEAD";

/// Largest chunk handed to one `write` call (so the response deadline is checked between them).
const WRITE_CHUNK: usize = 64 * 1024;

/// After the response: how long, and how much, the server keeps reading what the client still
/// sends (a request body it never read) before it closes, so that the close does not turn
/// into a reset that destroys the response in flight ("lingering close").
const LINGER_TIME: Duration = Duration::from_millis(500);
const LINGER_BYTES: usize = 64 * 1024;

/// How long the accepting thread waits for evicted connections' threads to end when a burst
/// of connections has evicted faster than they could.
const EVICTED_EXIT_WAIT: Duration = Duration::from_millis(200);

/// Stack of the connection threads: they parse a few KiB and copy `Arc`s.
const CONNECTION_STACK: usize = 256 * 1024;

/// Limits and addresses of a [`Server`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerConfig {
    /// Address to listen on ([`DEFAULT_LISTEN`]).
    pub listen: SocketAddr,
    /// Connections open at once (each has a thread); beyond it the oldest connection still
    /// sending its request is closed, or the new one gets 503.
    pub max_connections: usize,
    /// Longest silence while the request is being received.
    pub read_timeout: Duration,
    /// Longest time from accepting a connection to having its whole request line and headers.
    pub request_deadline: Duration,
    /// Longest time to hand the whole response to a client (slow readers are cut off).
    pub response_deadline: Duration,
    /// Largest request line plus headers, in bytes.
    pub max_request_bytes: usize,
    /// Name of the server's threads (Linux shows the first 15 bytes).
    pub thread_name: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9465)),
            max_connections: 128,
            read_timeout: Duration::from_secs(2),
            request_deadline: Duration::from_secs(5),
            response_deadline: Duration::from_secs(30),
            max_request_bytes: 8 * 1024,
            thread_name: "memtrace-http".to_string(),
        }
    }
}

/// Why the server could not start. Each message is one line that names the fix.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "cannot listen on {addr}: the address is already in use (another memtrace serve, or \
         another exporter on that port); pick a free one with --listen ADDRESS:PORT"
    )]
    AddressInUse { addr: SocketAddr },
    #[error(
        "cannot listen on {addr}: not an address of this host; use --listen 127.0.0.1:PORT \
         (this host only), 0.0.0.0:PORT (every interface) or one of this host's addresses"
    )]
    AddressNotAvailable { addr: SocketAddr },
    #[error(
        "cannot listen on {addr}: permission denied (ports below 1024 need \
         CAP_NET_BIND_SERVICE); use --listen with a port above 1023"
    )]
    PermissionDenied { addr: SocketAddr },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("invalid --listen value {value:?}: expected ADDRESS:PORT, e.g. 127.0.0.1:9465, 0.0.0.0:9465 or [::1]:9465")]
    InvalidListen { value: String },
    #[error("cannot start the HTTP server: {what}: {source}")]
    Setup {
        what: &'static str,
        #[source]
        source: io::Error,
    },
}

/// Parses a `--listen` value: `IP:PORT`, `[IPv6]:PORT` or `localhost:PORT`.
pub fn parse_listen(value: &str) -> Result<SocketAddr, ServeError> {
    let invalid = || ServeError::InvalidListen {
        value: value.to_string(),
    };
    if let Ok(addr) = value.parse::<SocketAddr>() {
        return Ok(addr);
    }
    // Host names other than localhost would need a resolver: refuse them rather than bind to
    // whatever a name happens to resolve to.
    let (host, port) = value.rsplit_once(':').ok_or_else(invalid)?;
    if host != "localhost" || port.parse::<u16>().is_err() {
        return Err(invalid());
    }
    value
        .to_socket_addrs()
        .map_err(|_| invalid())?
        .find(SocketAddr::is_ipv4)
        .ok_or_else(invalid)
}

/// The two methods a read-only server answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
}

/// A parsed request: what a handler sees.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: Method,
    /// The path, without the query (`/metrics`); not percent-decoded.
    pub path: String,
    /// What follows `?`, if anything (not decoded).
    pub query: Option<String>,
    /// Header names in lower case, values trimmed, in the order received (no endpoint
    /// needs them yet; the parser's tests read them).
    #[cfg_attr(not(test), allow(dead_code))]
    pub headers: Vec<(String, String)>,
}

impl Request {
    /// The first header of that name (case-insensitive).
    #[cfg(test)]
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The value of `key` in the query (`a=1&b`: `a` → `1`, `b` → empty), not decoded.
    pub fn query_param(&self, key: &str) -> Option<&str> {
        self.query.as_deref()?.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == key).then_some(v)
        })
    }
}

/// A response body, shared (not copied) between the snapshot and every connection sending it.
pub type Body = Arc<[u8]>;

/// What a handler returns.
#[derive(Clone)]
pub struct Response {
    pub status: u16,
    pub content_type: Cow<'static, str>,
    pub body: Body,
    /// Extra headers (`Content-Type`, `Content-Length` and `Connection` are the server's).
    pub headers: Vec<(&'static str, String)>,
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("content_type", &self.content_type)
            .field("body_len", &self.body.len())
            .field("headers", &self.headers)
            .finish()
    }
}

impl Response {
    pub fn new(
        status: u16,
        content_type: impl Into<Cow<'static, str>>,
        body: impl Into<Body>,
    ) -> Self {
        Response {
            status,
            content_type: content_type.into(),
            body: body.into(),
            headers: Vec::new(),
        }
    }

    /// A `text/plain` response.
    pub fn text(status: u16, text: impl Into<String>) -> Self {
        Response::new(
            status,
            "text/plain; charset=utf-8",
            text.into().into_bytes(),
        )
    }

    /// Adds a header (CR and LF in the value are replaced by spaces).
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        let value: String = value
            .into()
            .chars()
            .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
            .collect();
        self.headers.push((name, value));
        self
    }
}

/// A handler: builds a response from the request, quickly and without blocking (it runs on the
/// connection's thread; a panic becomes a 500).
pub type Handler = Arc<dyn Fn(&Request) -> Response + Send + Sync>;

/// The route table: exact paths to handlers.
#[derive(Clone, Default)]
pub struct Routes {
    routes: Vec<(String, Handler)>,
}

impl fmt::Debug for Routes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.paths()).finish()
    }
}

impl Routes {
    pub fn new() -> Self {
        Routes::default()
    }

    /// Serves `path` (exactly, e.g. `/metrics`) with `handler`, for GET and HEAD. A later
    /// route for the same path replaces the earlier one.
    pub fn get(
        mut self,
        path: &str,
        handler: impl Fn(&Request) -> Response + Send + Sync + 'static,
    ) -> Self {
        self.routes.retain(|(p, _)| p != path);
        self.routes.push((path.to_string(), Arc::new(handler)));
        self
    }

    /// The paths served, in the order they were added.
    pub fn paths(&self) -> Vec<&str> {
        self.routes.iter().map(|(p, _)| p.as_str()).collect()
    }

    fn find(&self, path: &str) -> Option<&Handler> {
        self.routes.iter().find(|(p, _)| p == path).map(|(_, h)| h)
    }
}

/// What the server has done so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Connections accepted (served, rejected or evicted).
    pub accepted: u64,
    /// Responses written in full, whatever their status.
    pub responses: u64,
    /// Connections answered 503 because every slot was busy answering.
    pub rejected_busy: u64,
    /// Connections closed to make room while they were still sending their request.
    pub evicted: u64,
    /// Requests that did not arrive in time (408).
    pub timed_out: u64,
    /// Malformed, oversized or not allowed requests (400, 405, 414, 431, 505).
    pub bad_requests: u64,
    /// Responses cut off because the client did not take them within the deadline.
    pub responses_abandoned: u64,
    /// Connections open now.
    pub open_connections: u64,
}

impl std::fmt::Display for ServerStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} responses on {} connections ({} busy, {} evicted, {} timed out, {} bad requests, \
             {} cut off)",
            self.responses,
            self.accepted,
            self.rejected_busy,
            self.evicted,
            self.timed_out,
            self.bad_requests,
            self.responses_abandoned
        )
    }
}

#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    responses: AtomicU64,
    rejected_busy: AtomicU64,
    evicted: AtomicU64,
    timed_out: AtomicU64,
    bad_requests: AtomicU64,
    responses_abandoned: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Receiving the request: may be evicted.
    Reading,
    /// Being answered.
    Responding,
    /// Closed to make room; the thread is on its way out.
    Evicted,
}

struct Connection {
    /// A clone of the connection's socket, to shut it down from outside its thread.
    stream: TcpStream,
    phase: Phase,
    accepted: Instant,
}

#[derive(Default)]
struct Registry {
    connections: HashMap<u64, Connection>,
    threads: Vec<JoinHandle<()>>,
    next_id: u64,
}

impl Registry {
    /// Connections that hold a slot (not evicted).
    fn open(&self) -> usize {
        self.connections
            .values()
            .filter(|c| c.phase != Phase::Evicted)
            .count()
    }

    fn join_finished(&mut self) {
        let (done, running): (Vec<_>, Vec<_>) = std::mem::take(&mut self.threads)
            .into_iter()
            .partition(JoinHandle::is_finished);
        self.threads = running;
        for handle in done {
            // A panicking connection thread has already been counted out by its guard.
            let _ = handle.join();
        }
    }
}

struct Inner {
    config: ServerConfig,
    routes: Routes,
    stop: AtomicBool,
    registry: Mutex<Registry>,
    counters: Counters,
}

impl Inner {
    fn registry(&self) -> MutexGuard<'_, Registry> {
        // A panic while holding the lock leaves the registry consistent (every change is one
        // insert, remove or field store): keep going.
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn stats(&self) -> ServerStats {
        let c = &self.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ServerStats {
            accepted: load(&c.accepted),
            responses: load(&c.responses),
            rejected_busy: load(&c.rejected_busy),
            evicted: load(&c.evicted),
            timed_out: load(&c.timed_out),
            bad_requests: load(&c.bad_requests),
            responses_abandoned: load(&c.responses_abandoned),
            open_connections: self.registry().open() as u64,
        }
    }
}

/// A running server. Dropping it shuts it down (like [`Server::shutdown`]).
pub struct Server {
    local_addr: SocketAddr,
    inner: Arc<Inner>,
    accept: Option<JoinHandle<()>>,
    wake: UnixStream,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.local_addr)
            .field("routes", &self.inner.routes)
            .finish()
    }
}

/// Spawns a thread that takes no process-directed signal (nor do the threads it spawns): the
/// session waits for SIGINT/SIGTERM with `sigtimedwait` in its own thread, and a signal
/// delivered to a server thread that does not block it would end memtrace without a report.
fn spawn_without_signals<F>(
    builder: thread::Builder,
    f: F,
) -> std::io::Result<thread::JoinHandle<()>>
where
    F: FnOnce() + Send + 'static,
{
    // SAFETY: sigset_t is plain data initialised by sigfillset; pthread_sigmask only changes
    // the calling thread's mask, which the new thread inherits, and the old mask is put back
    // right after the spawn.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
        if rc != 0 {
            return Err(std::io::Error::from_raw_os_error(rc));
        }
        let spawned = builder.spawn(f);
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        spawned
    }
}

impl Server {
    /// Binds `config.listen` and starts serving `routes` on a thread of its own. Fails (one
    /// line naming the fix) when the address cannot be bound.
    pub fn start(mut config: ServerConfig, routes: Routes) -> Result<Server, ServeError> {
        // A NUL would make spawning the threads panic.
        config.thread_name.retain(|c| c != '\0');
        let addr = config.listen;
        let listener = TcpListener::bind(addr).map_err(|e| bind_error(addr, e))?;
        let local_addr = listener.local_addr().map_err(|source| ServeError::Setup {
            what: "reading the bound address",
            source,
        })?;
        listener
            .set_nonblocking(true)
            .map_err(|source| ServeError::Setup {
                what: "making the listening socket non-blocking",
                source,
            })?;
        let (wake, wake_rx) = UnixStream::pair().map_err(|source| ServeError::Setup {
            what: "creating the wake-up socket pair",
            source,
        })?;
        let name = config.thread_name.clone();
        let inner = Arc::new(Inner {
            config,
            routes,
            stop: AtomicBool::new(false),
            registry: Mutex::new(Registry::default()),
            counters: Counters::default(),
        });
        let accept = {
            let inner = Arc::clone(&inner);
            spawn_without_signals(thread::Builder::new().name(name), move || {
                accept_loop(&inner, &listener, &wake_rx)
            })
            .map_err(|source| ServeError::Setup {
                what: "spawning the accepting thread",
                source,
            })?
        };
        Ok(Server {
            local_addr,
            inner,
            accept: Some(accept),
            wake,
        })
    }

    /// The address actually bound (the real port when `listen` had port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Counters of what the server did so far.
    #[cfg(test)]
    pub fn stats(&self) -> ServerStats {
        self.inner.stats()
    }

    /// Stops accepting, closes every open connection and joins every thread of the server.
    /// Returns the final counters.
    pub fn shutdown(mut self) -> ServerStats {
        self.stop();
        self.inner.stats()
    }

    fn stop(&mut self) {
        let Some(accept) = self.accept.take() else {
            return;
        };
        self.inner.stop.store(true, Ordering::SeqCst);
        // The accepting thread polls this socket; a failed write (it exited already) is fine.
        let _ = (&self.wake).write(&[1]);
        let _ = accept.join();
        // No new connection threads from here on: close every connection and join them all.
        let threads = {
            let mut registry = self.inner.registry();
            for c in registry.connections.values() {
                let _ = c.stream.shutdown(Shutdown::Both);
            }
            std::mem::take(&mut registry.threads)
        };
        for handle in threads {
            let _ = handle.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn bind_error(addr: SocketAddr, e: io::Error) -> ServeError {
    match e.raw_os_error() {
        Some(libc::EADDRINUSE) => ServeError::AddressInUse { addr },
        Some(libc::EADDRNOTAVAIL) => ServeError::AddressNotAvailable { addr },
        Some(libc::EACCES) | Some(libc::EPERM) => ServeError::PermissionDenied { addr },
        _ => ServeError::Bind { addr, source: e },
    }
}

/// Waits until the listener or the wake-up socket is readable (or an error, or EINTR).
fn wait_readable(listener: RawFd, wake: RawFd) -> io::Result<()> {
    let mut fds = [
        libc::pollfd {
            fd: listener,
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: wake,
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    // SAFETY: `fds` is a valid array of two initialised pollfd structs that lives across the
    // call, and its length is passed; both descriptors stay open (owned by the caller).
    let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(())
}

fn accept_loop(inner: &Arc<Inner>, listener: &TcpListener, wake: &UnixStream) {
    let (listen_fd, wake_fd) = (listener.as_raw_fd(), wake.as_raw_fd());
    while !inner.stop.load(Ordering::SeqCst) {
        if wait_readable(listen_fd, wake_fd).is_err() {
            // poll itself failing (ENOMEM): back off instead of spinning.
            thread::sleep(Duration::from_millis(50));
            continue;
        }
        loop {
            if inner.stop.load(Ordering::SeqCst) {
                return;
            }
            match listener.accept() {
                Ok((stream, _)) => admit(inner, stream),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                Err(e) => {
                    // Out of descriptors or memory: the pending connection stays queued; wait
                    // for connections to close instead of spinning on it.
                    let backoff = match e.raw_os_error() {
                        Some(libc::EMFILE) | Some(libc::ENFILE) => 100,
                        _ => 10,
                    };
                    thread::sleep(Duration::from_millis(backoff));
                    break;
                }
            }
        }
    }
}

/// Takes an accepted connection: a thread of its own, or (when every slot is busy answering) a
/// 503 written without blocking.
fn admit(inner: &Arc<Inner>, stream: TcpStream) {
    bump(&inner.counters.accepted);
    // Linux does not pass the listener's O_NONBLOCK on to accepted sockets; be explicit, the
    // connection threads rely on blocking reads with timeouts.
    if stream.set_nonblocking(false).is_err() {
        return;
    }
    let max = inner.config.max_connections.max(1);
    let mut registry = inner.registry();
    registry.join_finished();
    if registry.open() >= max {
        // Make room: close the connection that has been sending its request the longest.
        let oldest = registry
            .connections
            .iter_mut()
            .filter(|(_, c)| c.phase == Phase::Reading)
            .min_by_key(|(id, c)| (c.accepted, **id));
        match oldest {
            Some((_, c)) => {
                c.phase = Phase::Evicted;
                let _ = c.stream.shutdown(Shutdown::Both);
                bump(&inner.counters.evicted);
            }
            None => {
                drop(registry);
                reject_busy(inner, stream);
                return;
            }
        }
    }
    // Evicted threads leave within moments (their socket is shut down), but a burst of
    // connections can evict faster than they go: never let threads pile up past twice the
    // limit; wait a moment for the evicted ones (without the lock: they take it on their way
    // out) before answering 503.
    if registry.threads.len() >= 2 * max {
        drop(registry);
        let until = Instant::now() + EVICTED_EXIT_WAIT;
        loop {
            thread::sleep(Duration::from_millis(1));
            registry = inner.registry();
            registry.join_finished();
            if registry.threads.len() < 2 * max {
                break;
            }
            if Instant::now() >= until {
                drop(registry);
                reject_busy(inner, stream);
                return;
            }
            drop(registry);
        }
    }
    let Ok(watch) = stream.try_clone() else {
        drop(registry);
        reject_busy(inner, stream);
        return;
    };
    let id = registry.next_id;
    registry.next_id += 1;
    let spawned = {
        let inner = Arc::clone(inner);
        thread::Builder::new()
            .name(inner.config.thread_name.clone())
            .stack_size(CONNECTION_STACK)
            .spawn(move || {
                let _guard = Unregister { inner: &inner, id };
                serve_connection(&inner, id, stream);
            })
    };
    match spawned {
        Ok(handle) => {
            registry.threads.push(handle);
            registry.connections.insert(
                id,
                Connection {
                    stream: watch,
                    phase: Phase::Reading,
                    accepted: Instant::now(),
                },
            );
        }
        Err(_) => {
            // Out of threads: the stream went with the failed closure; the watch clone is the
            // same socket.
            drop(registry);
            reject_busy(inner, watch);
        }
    }
}

/// Removes a connection from the registry when its thread ends (returns or panics).
struct Unregister<'a> {
    inner: &'a Inner,
    id: u64,
}

impl Drop for Unregister<'_> {
    fn drop(&mut self) {
        self.inner.registry().connections.remove(&self.id);
    }
}

/// 503 on the accepting thread: a non-blocking write of a response small enough for any
/// socket buffer; nothing here can wait on the client.
fn reject_busy(inner: &Inner, stream: TcpStream) {
    bump(&inner.counters.rejected_busy);
    if stream.set_nonblocking(true).is_err() {
        return;
    }
    // Whatever of the request already arrived is read first, so the close below is a FIN and
    // not a reset that could destroy the 503 before the client reads it.
    let mut sink = [0u8; 4096];
    for _ in 0..4 {
        match (&stream).read(&mut sink) {
            Ok(n) if n > 0 => continue,
            _ => break,
        }
    }
    let response = Response::text(
        503,
        "memtrace: too many connections; try again in a moment\n",
    )
    .with_header("Retry-After", "1");
    let _ = (&stream).write(&head_bytes(&response, response.body.len()));
    let _ = (&stream).write(&response.body);
    let _ = stream.shutdown(Shutdown::Write);
}

/// Why no request could be read.
#[derive(Debug, PartialEq, Eq)]
enum RequestError {
    /// The client closed (or the connection was evicted or shut down) before a whole request.
    Closed,
    /// Silence longer than the read timeout, or the request deadline passed.
    Timeout,
    /// The request line alone is longer than the limit.
    UriTooLong,
    /// The request line and headers are longer than the limit.
    HeadersTooLarge,
    /// Not HTTP/1.0 or HTTP/1.1.
    VersionNotSupported,
    /// A well-formed request with a method other than GET or HEAD.
    MethodNotAllowed,
    /// Anything else malformed.
    Bad(&'static str),
}

fn serve_connection(inner: &Inner, id: u64, stream: TcpStream) {
    let config = &inner.config;
    let accepted = Instant::now();
    let request = read_request(&stream, config, accepted);
    {
        let mut registry = inner.registry();
        match registry.connections.get_mut(&id) {
            // Evicted while the request was completing: leave it closed.
            Some(c) if c.phase == Phase::Evicted => return,
            Some(c) => c.phase = Phase::Responding,
            // Shut down already.
            None => return,
        }
    }
    let (response, method) = match request {
        Ok(request) => (dispatch(&inner.routes, &request), request.method),
        Err(RequestError::Closed) => return,
        Err(e) => {
            let counter = if e == RequestError::Timeout {
                &inner.counters.timed_out
            } else {
                &inner.counters.bad_requests
            };
            bump(counter);
            (error_response(&e), Method::Get)
        }
    };
    let deadline = Instant::now() + config.response_deadline;
    match write_response(&stream, &response, method, deadline) {
        Ok(()) => bump(&inner.counters.responses),
        Err(_) => {
            bump(&inner.counters.responses_abandoned);
            return;
        }
    }
    linger_close(&stream);
}

fn error_response(e: &RequestError) -> Response {
    match e {
        RequestError::Timeout => Response::text(408, "request not received in time\n"),
        RequestError::UriTooLong => Response::text(414, "request line too long\n"),
        RequestError::HeadersTooLarge => Response::text(431, "request headers too large\n"),
        RequestError::VersionNotSupported => {
            Response::text(505, "only HTTP/1.0 and HTTP/1.1 are supported\n")
        }
        RequestError::MethodNotAllowed => {
            Response::text(405, "read-only: only GET and HEAD are allowed\n")
                .with_header("Allow", ALLOWED_METHODS)
        }
        RequestError::Bad(why) => Response::text(400, format!("bad request: {why}\n")),
        // Never answered.
        RequestError::Closed => Response::text(400, "closed\n"),
    }
}

fn dispatch(routes: &Routes, request: &Request) -> Response {
    let Some(handler) = routes.find(&request.path) else {
        return Response::text(
            404,
            format!(
                "not found: {}; this server has {}\n",
                request.path,
                routes.paths().join(", ")
            ),
        );
    };
    match panic::catch_unwind(AssertUnwindSafe(|| handler(request))) {
        Ok(response) => response,
        Err(_) => Response::text(500, "internal error while answering this request\n"),
    }
}

/// Reads the request line and headers, within the limits of `config`.
fn read_request(
    stream: &TcpStream,
    config: &ServerConfig,
    accepted: Instant,
) -> Result<Request, RequestError> {
    let deadline = accepted + config.request_deadline;
    let limit = config.max_request_bytes.max(64);
    let mut buf: Vec<u8> = Vec::with_capacity(1024.min(limit));
    let mut chunk = [0u8; 2048];
    loop {
        if let Some(end) = head_end(&buf) {
            return parse_request(&buf[..end]);
        }
        // A request line that is complete can be judged before the headers arrive.
        if let Some(line_end) = buf.iter().position(|&b| b == b'\n') {
            check_request_line(&buf[..line_end])?;
        }
        if buf.len() >= limit {
            return Err(if buf.contains(&b'\n') {
                RequestError::HeadersTooLarge
            } else {
                RequestError::UriTooLong
            });
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(RequestError::Timeout);
        }
        stream
            .set_read_timeout(Some(
                left.min(config.read_timeout).max(Duration::from_millis(1)),
            ))
            .map_err(|_| RequestError::Closed)?;
        let want = (limit - buf.len()).min(chunk.len());
        match (&*stream).read(&mut chunk[..want]) {
            Ok(0) => return Err(RequestError::Closed),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(RequestError::Timeout)
            }
            Err(_) => return Err(RequestError::Closed),
        }
    }
}

/// End of the header block: the index just past the empty line (CRLF CRLF, or bare LFs).
fn head_end(buf: &[u8]) -> Option<usize> {
    let mut line_start = 0;
    for (i, &b) in buf.iter().enumerate() {
        if b != b'\n' {
            continue;
        }
        let line = &buf[line_start..i];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() && line_start > 0 {
            return Some(i + 1);
        }
        line_start = i + 1;
    }
    None
}

fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The request line's method, target and version, checked.
fn split_request_line(line: &[u8]) -> Result<(&str, &str), RequestError> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let line =
        std::str::from_utf8(line).map_err(|_| RequestError::Bad("request line is not UTF-8"))?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(RequestError::Bad(
            "request line is not METHOD TARGET VERSION",
        ));
    };
    if method.is_empty() || !method.bytes().all(is_token_char) {
        return Err(RequestError::Bad("invalid method"));
    }
    match version {
        "HTTP/1.1" | "HTTP/1.0" => {}
        v if v.starts_with("HTTP/") => return Err(RequestError::VersionNotSupported),
        _ => return Err(RequestError::Bad("invalid HTTP version")),
    }
    if method != "GET" && method != "HEAD" {
        return Err(RequestError::MethodNotAllowed);
    }
    if target.is_empty() || target.bytes().any(|b| b.is_ascii_control() || b >= 0x7f) {
        return Err(RequestError::Bad("invalid request target"));
    }
    Ok((method, target))
}

fn check_request_line(line: &[u8]) -> Result<(), RequestError> {
    split_request_line(line).map(|_| ())
}

fn parse_request(head: &[u8]) -> Result<Request, RequestError> {
    let mut lines = head.split(|&b| b == b'\n');
    let first = lines.next().unwrap_or_default();
    let (method, target) = split_request_line(first)?;
    let method = if method == "HEAD" {
        Method::Head
    } else {
        Method::Get
    };
    // origin-form `/path?query`; absolute-form `http://host/path?query` is accepted too.
    let target = match target.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => {
            rest.find('/').map_or("/", |slash| &rest[slash..])
        }
        _ => target,
    };
    if !target.starts_with('/') {
        return Err(RequestError::Bad("request target must be a path"));
    }
    let target = target.split_once('#').map_or(target, |(t, _)| t);
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), Some(q.to_string())),
        None => (target.to_string(), None),
    };
    let mut headers = Vec::new();
    for line in lines {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            return Err(RequestError::Bad("folded header lines are not accepted"));
        }
        let line =
            std::str::from_utf8(line).map_err(|_| RequestError::Bad("header is not UTF-8"))?;
        let (name, value) = line
            .split_once(':')
            .ok_or(RequestError::Bad("header line without ':'"))?;
        if name.is_empty() || !name.bytes().all(is_token_char) {
            return Err(RequestError::Bad("invalid header name"));
        }
        headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
    }
    Ok(Request {
        method,
        path,
        query,
        headers,
    })
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        414 => "URI Too Long",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Status",
    }
}

/// Status line and headers.
fn head_bytes(response: &Response, content_length: usize) -> Vec<u8> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {content_length}\r\n\
         Connection: close\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n",
        response.status,
        reason(response.status),
        response.content_type,
    );
    for (name, value) in &response.headers {
        head.push_str(name);
        head.push_str(": ");
        head.push_str(value);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    head.into_bytes()
}

/// Writes the response (without its body for HEAD) by the deadline.
fn write_response(
    stream: &TcpStream,
    response: &Response,
    method: Method,
    deadline: Instant,
) -> io::Result<()> {
    let head = head_bytes(response, response.body.len());
    write_by(stream, &head, deadline)?;
    if method == Method::Get {
        write_by(stream, &response.body, deadline)?;
    }
    Ok(())
}

fn write_by(stream: &TcpStream, mut data: &[u8], deadline: Instant) -> io::Result<()> {
    while !data.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        stream.set_write_timeout(Some(left.max(Duration::from_millis(1))))?;
        let n = data.len().min(WRITE_CHUNK);
        match (&*stream).write(&data[..n]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(written) => data = &data[written..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Half-closes, then reads (and drops) what the client still sends for a moment, so that the
/// close is not a reset that would destroy the response before the client has read it.
fn linger_close(stream: &TcpStream) {
    if stream.shutdown(Shutdown::Write).is_err() {
        return;
    }
    let until = Instant::now() + LINGER_TIME;
    let mut sink = [0u8; 4096];
    let mut drained = 0;
    while drained < LINGER_BYTES {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            break;
        }
        match (&*stream).read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
}

#[cfg(test)]
mod tests;
