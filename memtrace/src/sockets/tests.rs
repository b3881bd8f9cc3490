//! The model, sorting, `--min-bytes`, owners, the table and the JSON document.

use std::collections::BTreeSet;

use super::diag::{DiagSocket, MemInfo, Query};
use super::owners::OwnerIndex;
use super::*;
use crate::render::sockets::{render_scan, render_table};
use crate::schema::sockets::{to_json, SocketsDocument, SOCKETS_SCHEMA};

fn inet(query: Query, state: u8, local: &str, remote: &str, inode: u64) -> DiagSocket {
    DiagSocket {
        query,
        state,
        socket_type: libc::SOCK_STREAM as u8,
        local: local.into(),
        remote: remote.into(),
        inode,
        rqueue: Some(0),
        wqueue: Some(0),
        meminfo: Some(MemInfo::default()),
        unix_peer: None,
    }
}

fn with_mem(mut d: DiagSocket, rqueue: u64, m: MemInfo) -> DiagSocket {
    d.rqueue = Some(rqueue);
    d.meminfo = Some(m);
    d
}

fn owner(pid: u32, comm: &str) -> SocketOwner {
    SocketOwner {
        pid,
        comm: comm.into(),
        ..Default::default()
    }
}

const MIB: u64 = 1 << 20;

/// A receiver with 32 MiB queued, a sender with 3 MiB in its write queue (of which 1 MiB in
/// flight), a socket with 10 bytes pinning 8 order-3 frags, an idle listener and a connection
/// waiting in its accept queue, in two namespaces.
fn sample() -> Vec<(u64, DiagSocket)> {
    vec![
        (1, inet(Query::Tcp4, 10, "0.0.0.0:8080", "0.0.0.0:*", 500)),
        (
            1,
            with_mem(
                inet(Query::Tcp4, 1, "127.0.0.1:8080", "127.0.0.1:5555", 0),
                4096,
                MemInfo {
                    rmem_alloc: 2 * MIB,
                    ..Default::default()
                },
            ),
        ),
        (
            1,
            with_mem(
                inet(Query::Tcp4, 1, "127.0.0.1:9000", "127.0.0.1:4000", 101),
                32 * MIB,
                MemInfo {
                    rmem_alloc: 33 * MIB,
                    backlog: 4096,
                    ..Default::default()
                },
            ),
        ),
        (
            2,
            with_mem(
                inet(Query::Tcp6, 1, "[::1]:4000", "[::1]:9000", 102),
                0,
                MemInfo {
                    wmem_alloc: MIB,
                    wmem_queued: 3 * MIB,
                    fwd_alloc: 500_000,
                    optmem: 1000,
                    ..Default::default()
                },
            ),
        ),
        (
            2,
            with_mem(
                inet(Query::Tcp4, 1, "10.0.0.1:443", "10.0.0.2:1234", 103),
                10,
                MemInfo {
                    rmem_alloc: 8 * 32768,
                    ..Default::default()
                },
            ),
        ),
    ]
}

#[test]
fn held_bytes_sorting_and_min_bytes() {
    let all = build(sample(), 0);
    let order: Vec<(u64, u64)> = all.iter().map(|s| (s.inode, s.held_bytes)).collect();
    assert_eq!(
        order,
        [
            (101, 33 * MIB + 4096),
            // max(wmem_alloc, wmem_queued): in-flight skbs are clones of queued ones.
            (102, 3 * MIB),
            (0, 2 * MIB),
            (103, 8 * 32768),
            (500, 0),
        ]
    );
    let big = build(sample(), MIB);
    assert_eq!(big.len(), 3);
    assert!(big.iter().all(|s| s.held_bytes >= MIB));
    assert!(build(sample(), u64::MAX).is_empty());

    let recv = &all[0];
    assert_eq!(
        (
            recv.family.as_str(),
            recv.state.as_str(),
            recv.socket_type.as_str()
        ),
        ("tcp", "ESTAB", "stream")
    );
    assert_eq!(
        (recv.recv_queue, recv.rmem_alloc, recv.backlog),
        (32 * MIB, 33 * MIB, 4096)
    );
    assert_eq!(all[1].fwd_alloc, 500_000);
    assert_eq!(all[1].optmem, 1000);
    assert_eq!(all[1].family, "tcp6");
    let listener = all.iter().find(|s| s.inode == 500).unwrap();
    assert_eq!(
        (listener.state.as_str(), listener.accept_queue),
        ("LISTEN", Some(0))
    );
    assert_eq!((listener.recv_queue, listener.send_queue), (0, 0));
}

#[test]
fn unaccepted_connections_get_their_listener() {
    let all = build(sample(), 0);
    let waiting = all.iter().find(|s| s.local == "127.0.0.1:8080").unwrap();
    assert_eq!(waiting.listener, Some(500));
    // No listener on that port in namespace 2.
    assert_eq!(all.iter().find(|s| s.inode == 103).unwrap().listener, None);
    // A listener in another namespace does not count.
    let mut other_ns = sample();
    other_ns[0].0 = 2;
    assert_eq!(
        build(other_ns, 0)
            .iter()
            .find(|s| s.local == "127.0.0.1:8080")
            .unwrap()
            .listener,
        None
    );
}

#[test]
fn owners_are_attached() {
    let mut all = build(sample(), 0);
    let index = OwnerIndex {
        by_inode: [
            (101, BTreeSet::from([7, 3])),
            (500, BTreeSet::from([42])),
            (999, BTreeSet::from([1])),
        ]
        .into_iter()
        .collect(),
        unreadable: Vec::new(),
    };
    let mut asked = Vec::new();
    attach_owners(&mut all, &index, &Listeners::new(&sample()), |pid| {
        asked.push(pid);
        owner(pid, &format!("p{pid}"))
    });
    asked.sort();
    assert_eq!(asked, [3, 7, 42, 42]);
    let pids = |inode: u64, local: &str| -> Vec<u32> {
        all.iter()
            .find(|s| s.inode == inode && s.local == local)
            .unwrap()
            .owners
            .iter()
            .map(|o| o.pid)
            .collect()
    };
    assert_eq!(pids(101, "127.0.0.1:9000"), [3, 7]);
    assert_eq!(pids(0, "127.0.0.1:8080"), [42]);
    assert_eq!(pids(500, "0.0.0.0:8080"), [42]);
    assert!(pids(103, "10.0.0.1:443").is_empty());
}

#[test]
fn unix_fixture_model() {
    let mut d = diag::Decoded::default();
    diag::decode(
        include_bytes!("fixtures/unix.bin"),
        Query::Unix,
        103,
        &mut d,
    )
    .unwrap();
    let raw: Vec<(u64, DiagSocket)> = d.sockets.into_iter().map(|s| (9, s)).collect();
    let all = build(raw, 0);
    let path = "/tmp/memtrace-fixture-2973.sock";
    let rows: Vec<(u64, &str, &str, &str, u64, u64)> = all
        .iter()
        .map(|s| {
            (
                s.inode,
                s.state.as_str(),
                s.local.as_str(),
                s.remote.as_str(),
                s.recv_queue,
                s.held_bytes,
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            // The sender holds the memory of what waits in the receiver's queue.
            (28842926, "ESTAB", "*", path, 0, 6400),
            (28842925, "LISTEN", path, "*", 0, 0),
            (28842927, "ESTAB", path, "socket:[28842926]", 5000, 0),
            (28842928, "UNCONN", "@memtrace-fixture", "*", 0, 0),
        ]
    );
    assert_eq!(all[0].socket_type, "stream");
    assert_eq!(all[3].socket_type, "dgram");
    assert_eq!(all[1].accept_queue, Some(0));
}

#[test]
fn top_by_rmem() {
    let all = build(sample(), 0);
    let top: Vec<u64> = top_by_rmem_alloc(&all, 2)
        .iter()
        .map(|s| s.rmem_alloc)
        .collect();
    assert_eq!(top, [33 * MIB, 2 * MIB]);
    assert_eq!(top_by_rmem_alloc(&all, 0).len(), 3);
}

#[test]
fn state_names() {
    assert_eq!(state_name(7, Query::Tcp4), "CLOSE");
    assert_eq!(state_name(7, Query::Udp6), "UNCONN");
    assert_eq!(state_name(6, Query::Tcp6), "TIME-WAIT");
    assert_eq!(state_name(99, Query::Tcp6), "STATE-99");
}

fn owned_sample() -> Vec<Socket> {
    let mut all = build(sample(), 0);
    for s in &mut all {
        match s.inode {
            101 => {
                s.owners = vec![SocketOwner {
                    pid: 4242,
                    comm: "nginx".into(),
                    cmdline: Some("nginx: worker".into()),
                    pod_uid: Some("0f5b9d3e-7a1c-4e2b-9c8d-1a2b3c4d5e6f".into()),
                    container_id: Some("3b6f1c0e2d4a5b6c7d8e9f0a".into()),
                    cgroup: None,
                }]
            }
            102 => s.owners = (1..=5).map(|p| owner(p, "w")).collect(),
            0 => s.owners = vec![owner(42, "srv")],
            _ => {}
        }
    }
    all
}

#[test]
fn table() {
    let all = owned_sample();
    let text = render_table(&all, 3);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("      HELD RMEM_ALLOC     RECV-Q     SEND-Q  RMEM/Q  PROTO"));
    assert!(lines[0].ends_with("NETNS OWNERS"), "{}", lines[0]);
    assert!(
        lines[1].starts_with("  33.0 MiB   33.0 MiB   32.0 MiB        0 B    1.0x  tcp   ESTAB"),
        "{}",
        lines[1]
    );
    assert!(lines[1].contains("127.0.0.1:9000 -> 127.0.0.1:4000"));
    assert!(lines[1]
        .ends_with(" 1     nginx[4242] pod 0f5b9d3e-7a1c-4e2b-9c8d-1a2b3c4d5e6f ctr 3b6f1c0e2d4a"));
    assert!(lines[2].contains("tcp6"), "{}", lines[2]);
    assert!(
        lines[2].ends_with("w[1], w[2], w[3], +2 more"),
        "{}",
        lines[2]
    );
    assert!(
        lines[3].ends_with("not accepted by srv[42]"),
        "{}",
        lines[3]
    );
    assert!(lines[3].contains(" 512x "), "{}", lines[3]);
    // Columns line up.
    let at = lines[0].find("LOCAL").unwrap();
    assert!(lines[1..4]
        .iter()
        .all(|l| l[at..].starts_with("127.") || l[at..].starts_with("[::1]")));
    assert_eq!(
        lines[4],
        "3 sockets listed hold 38.0 MiB (39849984 bytes): receive queues 35.0 MiB charged for \
         32.0 MiB queued, send side 3.0 MiB"
    );
    assert_eq!(lines[5], "... 2 more sockets hold 256.0 KiB");
    assert!(
        lines[6].starts_with("1 socket charge 2.0 MiB for 4.0 KiB of queued data (512.0x"),
        "{}",
        lines[6]
    );
    assert_eq!(lines.len(), 7);

    let all_rows = render_table(&all, 0);
    assert!(all_rows.contains("5 sockets listed"));
    assert!(all_rows.contains("10.0.0.1:443 -> 10.0.0.2:1234"));
    assert!(all_rows.contains("? (not found in /proc/*/fd)"));
    assert!(all_rows.contains("26214x"), "{all_rows}");
    assert!(!all_rows.contains("more sockets hold"));
    assert_eq!(render_table(&[], 5), "No socket holds that much memory.\n");

    let mut odd = all[0].clone();
    odd.owners[0].container_id = Some("ééééééééééééééé".into());
    assert!(render_table(&[odd], 0).contains(" ctr éééééééééééé"));

    let mut orphan = all[0].clone();
    orphan.inode = 0;
    orphan.owners.clear();
    assert!(render_table(&[orphan], 0).contains("- (no file: closed or not accepted)"));
}

#[test]
fn scan_header_and_notes() {
    let scan = SocketScan {
        sockets: owned_sample(),
        namespaces: 2,
        scanned: 1234,
        notes: vec!["something was not visible".into()],
    };
    let text = render_scan(&scan, 1, MIB);
    assert!(text.starts_with(
        "Sockets holding at least 1.0 MiB (5 of 1234 sockets in 2 network namespaces)"
    ));
    assert!(text.ends_with("note: something was not visible\n"));
}

#[test]
fn json_document() {
    let scan = SocketScan {
        sockets: owned_sample(),
        namespaces: 2,
        scanned: 9,
        notes: vec!["n".into()],
    };
    let doc = SocketsDocument::new(&scan, "vm".into(), 1.5e9, 0);
    assert_eq!(
        doc.held_bytes,
        33 * MIB + 4096 + 3 * MIB + 2 * MIB + 8 * 32768
    );
    let text = to_json(&doc).unwrap();
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(value["schema"], SOCKETS_SCHEMA);
    assert_eq!(value["sockets"][0]["inode"], 101);
    assert_eq!(value["sockets"][0]["owners"][0]["comm"], "nginx");
    assert_eq!(value["sockets"][0]["held_bytes"], 33 * MIB + 4096);
    // The sockets (embedded in a trace report, read back from saved sessions) round-trip.
    let back: Vec<crate::schema::v1::SocketV1> =
        serde_json::from_value(value["sockets"].clone()).unwrap();
    let back: Vec<Socket> = back.into_iter().map(Into::into).collect();
    assert_eq!(back, scan.sockets);
}

#[test]
fn collect_on_this_machine() {
    // Whatever runs here: the call works and its list is sorted and filtered.
    let scan = collect_with(&CollectOptions {
        min_bytes: 1,
        ..Default::default()
    })
    .unwrap();
    assert!(scan.namespaces >= 1);
    assert!(scan.sockets.iter().all(|s| s.held_bytes >= 1));
    assert!(scan
        .sockets
        .windows(2)
        .all(|w| w[0].held_bytes >= w[1].held_bytes));
}

/// Two listeners on port 8080 of namespace 1 (`SO_REUSEPORT`), one on 127.0.0.1:9090 and a
/// wildcard one on 9090, and connections waiting in their accept queues.
fn reuseport_sample() -> Vec<(u64, DiagSocket)> {
    let waiting = |local: &str, rmem: u64| {
        with_mem(
            inet(Query::Tcp4, 1, local, "127.0.0.1:5555", 0),
            10,
            MemInfo {
                rmem_alloc: rmem,
                ..Default::default()
            },
        )
    };
    vec![
        (1, inet(Query::Tcp4, 10, "0.0.0.0:8080", "0.0.0.0:*", 501)),
        (1, inet(Query::Tcp4, 10, "0.0.0.0:8080", "0.0.0.0:*", 502)),
        (1, inet(Query::Tcp4, 10, "127.0.0.1:9090", "0.0.0.0:*", 601)),
        (1, inet(Query::Tcp4, 10, "0.0.0.0:9090", "0.0.0.0:*", 602)),
        // An IPv6 listener on 8080 does not take IPv4 connections' queues.
        (1, inet(Query::Tcp6, 10, "[::]:8080", "[::]:*", 701)),
        (1, waiting("127.0.0.1:8080", 3 * MIB)),
        (1, waiting("127.0.0.1:9090", 2 * MIB)),
        (1, waiting("10.0.0.1:9090", MIB)),
    ]
}

#[test]
fn several_candidate_listeners_are_all_named() {
    let raw = reuseport_sample();
    let listeners = Listeners::new(&raw);
    let mut all = build(raw, 1);
    let find = |all: &[Socket], local: &str| -> Socket {
        all.iter().find(|s| s.local == local).unwrap().clone()
    };
    // Two listeners on the same address and port: which one holds it cannot be told.
    let shared = find(&all, "127.0.0.1:8080");
    assert_eq!(shared.listener, None);
    assert_eq!(listeners.for_socket(&shared), [501, 502]);
    // The listener bound to the exact address wins over the wildcard one, as in the kernel.
    assert_eq!(find(&all, "127.0.0.1:9090").listener, Some(601));
    assert_eq!(find(&all, "10.0.0.1:9090").listener, Some(602));

    let index = OwnerIndex {
        by_inode: [
            (501, BTreeSet::from([10])),
            (502, BTreeSet::from([11, 10])),
            (601, BTreeSet::from([20])),
            (602, BTreeSet::from([30])),
            (701, BTreeSet::from([40])),
        ]
        .into_iter()
        .collect(),
        unreadable: Vec::new(),
    };
    assert_eq!(
        owner_inodes(&all, &listeners),
        HashSet::from([501, 502, 601, 602])
    );
    attach_owners(&mut all, &index, &listeners, |pid| {
        owner(pid, &format!("srv{pid}"))
    });
    let pids = |s: &Socket| -> Vec<u32> { s.owners.iter().map(|o| o.pid).collect() };
    assert_eq!(pids(&find(&all, "127.0.0.1:8080")), [10, 11]);
    assert_eq!(pids(&find(&all, "127.0.0.1:9090")), [20]);
    assert_eq!(pids(&find(&all, "10.0.0.1:9090")), [30]);
    let table = render_table(&all, 0);
    assert!(
        table.contains("not accepted by one of the listeners of srv10[10], srv11[11]"),
        "{table}"
    );
    assert!(table.contains("not accepted by srv20[20]"), "{table}");
}

#[test]
fn namespace_notes_are_grouped() {
    let mut notes = NamespaceNotes::default();
    assert!(notes.is_empty());
    for ns in 1000..1300u64 {
        notes.add("udp sockets not listed: no handler".to_string(), ns);
        if ns % 100 == 0 {
            notes.add("not listed: Invalid argument (os error 22)".to_string(), ns);
        }
    }
    notes.add("tcp sockets changed during the dump".to_string(), 7);
    let lines = notes.lines();
    assert_eq!(
        lines,
        [
            "udp sockets not listed: no handler (in 300 network namespaces: 1000, 1001, 1002, \
             1003, 1004, 1005, 1006, 1007, … 292 more)",
            "not listed: Invalid argument (os error 22) (in 3 network namespaces: 1000, 1100, \
             1200)",
            "tcp sockets changed during the dump (in network namespace 7)",
        ]
    );
}

#[test]
fn dump_failures_name_no_namespace() {
    let e = diag::DumpError::Decode(diag::DecodeError::Kernel(libc::ENOENT));
    assert_eq!(
        dump_failure(Query::Udp6, &e),
        "udp6 sockets not listed: the kernel has no sock_diag handler for them (module udp_diag \
         not loaded?)"
    );
    let e = diag::DumpError::Decode(diag::DecodeError::Kernel(libc::EPERM));
    let text = dump_failure(Query::Unix, &e);
    assert!(
        text.starts_with("unix sockets not listed: the kernel answered"),
        "{text}"
    );
}

/// A fake `/proc` where pid 1 has socket 101 open, pid 2 the listener 500, pid 3 socket 102
/// and pid 4 socket 103.
fn fake_proc() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (pid, inode) in [(1, 101), (2, 500), (3, 102), (4, 103)] {
        let p = dir.path().join(pid.to_string());
        std::fs::create_dir_all(p.join("fd")).unwrap();
        std::fs::write(p.join("comm"), format!("p{pid}\n")).unwrap();
        std::os::unix::fs::symlink(format!("socket:[{inode}]"), p.join("fd/3")).unwrap();
    }
    dir
}

#[test]
fn top_rmem_is_chosen_before_the_owners() {
    let proc_ = fake_proc();
    let opts = CollectOptions {
        min_bytes: 1,
        proc_root: proc_.path().to_path_buf(),
        top_rmem: Some(2),
    };
    // The two with the most rmem_alloc: the 33 MiB receiver and the connection waiting for
    // accept() with 2 MiB; the 3 MiB sender (no rmem) and the 256 KiB socket are not kept.
    let mut notes = Vec::new();
    let top = with_owners(sample(), &opts, &mut notes).unwrap();
    assert!(notes.is_empty(), "{notes:?}");
    let rows: Vec<(u64, u64, Vec<u32>)> = top
        .iter()
        .map(|s| {
            (
                s.inode,
                s.rmem_alloc,
                s.owners.iter().map(|o| o.pid).collect(),
            )
        })
        .collect();
    assert_eq!(rows, [(101, 33 * MIB, vec![1]), (0, 2 * MIB, vec![2])]);
    // Only their owners are looked for.
    let all = build(sample(), 1);
    let listeners = Listeners::new(&sample());
    assert_eq!(owner_inodes(&all, &listeners).len(), 4);
    assert_eq!(owner_inodes(&top, &listeners), HashSet::from([101, 500]));
    // Without `top_rmem`: every socket holding at least min_bytes, by held_bytes.
    let every = with_owners(
        sample(),
        &CollectOptions {
            top_rmem: None,
            ..opts
        },
        &mut notes,
    )
    .unwrap();
    let inodes: Vec<u64> = every.iter().map(|s| s.inode).collect();
    assert_eq!(inodes, [101, 102, 0, 103]);
    assert_eq!(every[1].owners[0].comm, "p3");
}

#[test]
fn collect_top_on_this_machine() {
    let scan = collect_top_by_rmem_alloc(3).unwrap();
    assert!(scan.sockets.len() <= 3);
    assert!(scan.sockets.iter().all(|s| s.rmem_alloc > 0));
    assert!(scan
        .sockets
        .windows(2)
        .all(|w| w[0].rmem_alloc >= w[1].rmem_alloc));
}
