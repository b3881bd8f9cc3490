//! The JSON written: field names, types and values, and the documentation of every field.

use std::collections::{BTreeMap, BTreeSet};

use memtrace_common::Counter;

use serde_json::{json, Value};

use super::v1::{to_string_pretty, ReportV1};
use crate::model::{
    growth::{Growth, Snapshot, SnapshotStack},
    CgroupOwner, Frame, Owner, OwnerSummary, PodOwner, ProcessOwner, ProgramStats, Report,
    StackReport,
};

/// The report as a JSON value.
fn render_json(r: &Report) -> Value {
    serde_json::to_value(ReportV1::from(r)).expect("serialize")
}

use crate::model::testkit::{mixed_report, sample_report};
use crate::model::Class;

fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    k.sort_unstable();
    k
}

#[test]
fn schema_round_trip() {
    let r = sample_report(&[(Counter::OutstandingFull, 3)], 2);
    let s = to_string_pretty(&r).expect("serialize");
    assert!(s.ends_with("}\n"));
    let v: Value = serde_json::from_str(&s).expect("parse back");

    assert_eq!(
        keys(&v),
        [
            "callers",
            "class_filter",
            "classes",
            "counters",
            "failure_counters",
            "owners",
            "programs",
            "schema",
            "session",
            "snapshots",
            "sockets",
            "stacks",
            "totals"
        ]
    );
    assert_eq!(v["schema"], 1);

    let sess = &v["session"];
    assert_eq!(
        keys(sess),
        [
            "cgroups_note",
            "duration_secs",
            "ended_by",
            "estimated",
            "filters",
            "grace_note",
            "grace_secs",
            "hooks",
            "hostname",
            "interval_secs",
            "kernel",
            "kinds",
            "map_memory_bytes",
            "max_allocations",
            "max_objects",
            "max_stacks",
            "min_age_secs",
            "page_size",
            "requested_duration_secs",
            "sample_every",
            "slab_estimated",
            "slab_rate_changes",
            "slab_sample_every",
            "slab_sample_start",
            "sort",
            "started_at_unix",
        ]
    );
    assert_eq!(sess["hostname"], "web-1");
    assert_eq!(sess["started_at_unix"].as_f64(), Some(1_700_000_000.0));
    assert_eq!(sess["hooks"][1], "tracepoint kmem:mm_page_free");

    let counters = v["counters"].as_object().expect("counters object");
    assert_eq!(counters.len(), Counter::COUNT as usize);
    assert_eq!(counters["outstanding_map_full"].as_u64(), Some(3));
    assert_eq!(counters["agg_missing"].as_u64(), Some(0));

    let progs = v["programs"].as_array().expect("programs");
    assert_eq!(
        keys(&progs[1]),
        ["name", "recursion_misses", "run_count", "run_time_ns"]
    );
    assert_eq!(progs[1]["name"], "mm_page_free");
    assert_eq!(progs[1]["recursion_misses"].as_u64(), Some(2));

    assert_eq!(
        keys(&v["totals"]),
        ["allocated_bytes", "allocated_count", "allocations", "bytes"]
    );
    assert_eq!(v["totals"]["bytes"].as_u64(), Some(r.totals.bytes));

    let callers = v["callers"].as_array().expect("callers");
    assert_eq!(callers.len(), 4);
    assert_eq!(
        keys(&callers[0]),
        [
            "allocated_bytes",
            "allocations",
            "bytes",
            "function",
            "stacks"
        ]
    );
    assert_eq!(callers[0]["function"], "skb_page_frag_refill");
    assert_eq!(callers[0]["bytes"].as_u64(), Some(300 << 20));

    // Every stack, including the one that holds nothing, in report order.
    let stacks = v["stacks"].as_array().expect("stacks");
    assert_eq!(stacks.len(), r.stacks.len());
    assert_eq!(stacks.len(), 4);
    let s0 = &stacks[0];
    assert_eq!(
        keys(s0),
        [
            "allocated_bytes",
            "allocated_count",
            "allocations",
            "bytes",
            "bytes_req",
            "cache",
            "cache_merged",
            "caller",
            "class",
            "class_detail",
            "frames",
            "growing",
            "growth",
            "kind",
            "oldest_age_secs",
            "orders",
            "owners",
            "stack_id",
        ]
    );
    assert!(s0["growing"].is_null() && s0["growth"].is_null());
    assert_eq!(
        keys(&v["owners"]),
        ["attributed_bytes", "cgroups", "pods", "processes"]
    );
    assert_eq!(v["snapshots"], json!([]));
    assert_eq!(s0["kind"], "page");
    assert_eq!(s0["class"], "network");
    assert!(s0["class_detail"].is_null() && s0["cache"].is_null());
    assert!(s0["bytes_req"].is_null());
    assert_eq!(sess["kinds"], json!([]));
    assert!(v["class_filter"].is_null());
    assert_eq!(v["classes"][0]["class"], "network");
    assert_eq!(v["classes"][0]["in_total"], true);
    assert_eq!(s0["stack_id"].as_u64(), Some(1));
    assert_eq!(s0["bytes"].as_u64(), Some(300 << 20));
    assert_eq!(s0["orders"], json!([3]));
    assert_eq!(s0["oldest_age_secs"].as_f64(), Some(252.0));
    assert_eq!(s0["caller"], "skb_page_frag_refill");
    let o = &s0["owners"][0];
    assert_eq!(
        keys(o),
        [
            "allocations",
            "bytes",
            "cgroup",
            "cgroup_id",
            "comm",
            "container_id",
            "context",
            "pid",
            "pod_uid",
            "tgid"
        ]
    );
    assert_eq!(o["context"], "task");
    assert_eq!(o["comm"], "nginx");
    assert_eq!(o["tgid"].as_u64(), Some(1234));

    let f0 = &s0["frames"][0];
    assert_eq!(
        keys(f0),
        ["address", "file", "inlined", "line", "module", "offset", "symbol"]
    );
    assert_eq!(f0["address"], "0xffffffff81000010");
    assert_eq!(f0["symbol"], "__alloc_pages_noprof");
    assert_eq!(f0["offset"].as_u64(), Some(0x10));
    assert!(f0["module"].is_null() && f0["file"].is_null() && f0["line"].is_null());
    assert_eq!(f0["inlined"], json!([]));
    let f5 = &s0["frames"][5];
    assert_eq!(f5["file"], "net/ipv4/tcp.c");
    assert_eq!(f5["line"].as_u64(), Some(1234));
    assert_eq!(f5["inlined"], json!(["outer_inl", "inner_inl"]));
    assert_eq!(s0["frames"][6]["module"], "tcp_mod");

    // Unresolved frame: lowercase hex address, null symbol.
    let s1 = &stacks[1];
    let unresolved = &s1["frames"][3];
    assert_eq!(unresolved["address"], "0xffffffffdeadbeef");
    assert!(unresolved["symbol"].is_null() && unresolved["offset"].is_null());

    // The stack-unavailable bucket: null id, no age, no frames.
    let none = &stacks[2];
    assert!(none["stack_id"].is_null());
    assert!(none["oldest_age_secs"].is_null());
    assert_eq!(none["caller"], "[stack unavailable]");
    assert_eq!(none["frames"], json!([]));

    // The churn-only stack is listed too.
    assert_eq!(stacks[3]["bytes"].as_u64(), Some(0));
    assert_eq!(stacks[3]["allocated_bytes"].as_u64(), Some(1 << 30));
}

#[test]
fn mixed_kinds_fields() {
    let mut r = mixed_report(Some(vec![Class::Network, Class::SlabBacking]));
    r.stacks[0].frames.clear();
    let v: Value =
        serde_json::from_str(&to_string_pretty(&r).expect("serialize")).expect("parse back");

    let kinds = v["session"]["kinds"].as_array().expect("kinds");
    assert_eq!(kinds.len(), 4);
    assert_eq!(keys(&kinds[0]), ["hooks", "kind", "note", "traced"]);
    assert_eq!(kinds[1]["kind"], "slab");
    assert_eq!(kinds[1]["traced"], true);
    assert_eq!(kinds[1]["hooks"][0], "kmem:kmalloc");
    assert!(kinds[1]["note"].is_null());
    assert_eq!(kinds[2]["traced"], false);
    assert_eq!(
        kinds[2]["note"],
        "percpu:percpu_alloc_percpu not found in tracefs"
    );

    assert_eq!(v["class_filter"], json!(["network", "slab-backing"]));
    let classes = v["classes"].as_array().expect("classes");
    assert_eq!(classes.len(), r.classes.len());
    assert_eq!(
        keys(&classes[0]),
        ["allocations", "bytes", "class", "in_total", "stacks"]
    );
    let by_name = |name: &str| {
        classes
            .iter()
            .find(|c| c["class"] == name)
            .unwrap_or_else(|| panic!("class {name}"))
    };
    assert_eq!(by_name("slab-backing")["in_total"], false);
    assert_eq!(by_name("slab-backing")["bytes"].as_u64(), Some(16384));
    assert_eq!(by_name("network")["in_total"], true);
    assert_eq!(by_name("network")["stacks"].as_u64(), Some(2));
    assert_eq!(by_name("user-anon")["allocations"].as_u64(), Some(3));
    for c in classes {
        let name = c["class"].as_str().expect("class name");
        assert!(Class::from_name(name).is_some(), "{name}");
    }

    // Stacks of the selected classes only, with their kind, class, cache and request.
    let stacks = v["stacks"].as_array().expect("stacks");
    let got: Vec<(&str, &str, Option<&str>, Option<u64>)> = stacks
        .iter()
        .map(|s| {
            (
                s["kind"].as_str().expect("kind"),
                s["class"].as_str().expect("class"),
                s["cache"].as_str(),
                s["bytes_req"].as_u64(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("page", "network", None, None),
            ("page", "slab-backing", None, None),
            ("slab", "network", Some("skbuff_head_cache"), Some(696)),
        ]
    );
    assert_eq!(stacks[0]["orders"], json!([3]));
    assert_eq!(stacks[2]["orders"], json!([]));
    assert!(stacks.iter().all(|s| s["class_detail"].is_null()));
    // Totals: the slab-backing pages are listed but not counted.
    assert_eq!(v["totals"]["bytes"].as_u64(), Some(32768 + 768));

    // A page-cache stack on the write path.
    let mut r = mixed_report(None);
    let s = r
        .stacks
        .iter_mut()
        .find(|s| s.stack_id == Some(2))
        .expect("stack 2");
    s.class = Class::PageCache;
    s.frames[5].symbol = Some("ext4_da_write_begin".into());
    let v = render_json(&r);
    let s2 = v["stacks"]
        .as_array()
        .expect("stacks")
        .iter()
        .find(|s| s["stack_id"] == 2)
        .expect("stack 2");
    assert_eq!(s2["class"], "page-cache");
    assert_eq!(s2["class_detail"], "dirty");
}

/// A report in which every optional field is set and every list has an entry, so that its
/// JSON shows every field of the schema with a value.
fn full_report() -> Report {
    use crate::model::ExecContext;

    let mut r = mixed_report(Some(vec![Class::Network, Class::PageCache]));
    let s = &mut r.session;
    s.sample_every = 4;
    s.slab_sample_start = 16;
    s.slab_sample_every = 32;
    s.slab_rate_changes = vec![crate::model::RateChange {
        at_secs: 3.5,
        every: 32,
    }];
    s.grace_secs = 6.0;
    s.grace_note = Some("grace period of 6s not reached: the session ended early".into());
    s.interval_secs = 10.0;
    s.filters = vec!["pid 42".into()];
    s.sort = "growth".into();
    s.cgroups_note = Some("cgroup v2 ids recorded at allocation".into());
    s.hooks = vec!["tp_btf mm_page_alloc".into()];
    s.stack_rotation = crate::model::StackRotationStats {
        rotations: 2,
        stacks_retired: 40,
        races: 1,
        retired_kept: 40,
        folded: 3,
        failures: 1,
        last_error: Some("deleting stack 7: No such file or directory".into()),
    };
    s.cgroups_expired = 5;
    s.owner_recycling = crate::model::OwnerRecyclingStats {
        capacity: 65_535,
        in_use: 40_000,
        quarantined: 120,
        recycled: 9_000,
        reused: 8_500,
        failures: 1,
        last_error: Some("writing OWNER_FREE: Bad file descriptor".into()),
    };
    r.programs = vec![ProgramStats {
        name: "mm_page_alloc_btf".into(),
        recursion_misses: 1,
        run_count: 10,
        run_time_ns: 1000,
    }];
    let (uid, cid) = ("0b5c1f2a-1111-2222-3333-444455556666", "4f7c9a1be2d3");
    // A page-cache stack on the write path (class detail `dirty`), with every field set.
    r.stacks.push(StackReport {
        kind: memtrace_common::Kind::Slab,
        class: Class::PageCache,
        cache: Some("kmalloc-512".into()),
        cache_merged: vec!["sgpool-16".into()],
        bytes_req: Some(800),
        stack_id: Some(7),
        bytes: 1024,
        allocations: 2,
        allocated_bytes: 4096,
        allocated_count: 8,
        orders: vec![0],
        oldest_age_secs: Some(12.5),
        caller: "ext4_da_write_begin".into(),
        owners: vec![Owner {
            tgid: 42,
            pid: 43,
            comm: "writer".into(),
            bytes: 1024,
            allocations: 2,
            context: ExecContext::Task,
            cgroup_id: 99,
            cgroup: Some("/kubepods/burstable/pod1/c1".into()),
            pod_uid: Some(uid.into()),
            container_id: Some(cid.into()),
        }],
        frames: vec![Frame {
            address: 0xffff_ffff_8100_0010,
            symbol: Some("ext4_da_write_begin".into()),
            module: Some("ext4".into()),
            offset: Some(0x10),
            file: Some("fs/ext4/inode.c".into()),
            line: Some(3000),
            inlined: vec!["ext4_write_begin".into()],
        }],
        growth: Some(Growth {
            series: vec![0, 512, 1024],
            at_secs: vec![10.0, 20.0, 25.0],
            growing: true,
            bytes_per_sec: 68.5,
        }),
    });
    r.owners = OwnerSummary {
        attributed_bytes: 1024,
        processes: vec![ProcessOwner {
            context: ExecContext::Task,
            tgid: 42,
            comm: "writer".into(),
            cmdline: Some("writer --fast".into()),
            alive: true,
            cgroup_id: 99,
            cgroup: Some("/kubepods/burstable/pod1/c1".into()),
            memory_cgroup: Some("/kubepods/burstable/pod1/c1".into()),
            pod_uid: Some(uid.into()),
            container_id: Some(cid.into()),
            bytes: 1024,
            allocations: 2,
        }],
        cgroups: vec![CgroupOwner {
            cgroup_id: 99,
            path: Some("/kubepods/burstable/pod1/c1".into()),
            pod_uid: Some(uid.into()),
            qos: Some("burstable".into()),
            container_id: Some(cid.into()),
            runtime: Some("containerd".into()),
            unit: Some("sshd.service".into()),
            bytes: 1024,
            allocations: 2,
        }],
        pods: vec![PodOwner {
            pod_uid: uid.into(),
            qos: Some("burstable".into()),
            containers: vec![cid.into()],
            bytes: 1024,
            allocations: 2,
        }],
    };
    r.sockets.push(crate::sockets::Socket {
        netns: 4026531833,
        family: "tcp".into(),
        socket_type: "stream".into(),
        state: "ESTAB".into(),
        local: "127.0.0.1:8080".into(),
        remote: "127.0.0.1:40000".into(),
        inode: 12345,
        recv_queue: 32 << 20,
        send_queue: 0,
        accept_queue: Some(0),
        rmem_alloc: 33 << 20,
        rcvbuf: 64 << 20,
        wmem_alloc: 0,
        wmem_queued: 0,
        sndbuf: 2 << 20,
        fwd_alloc: 4096,
        optmem: 0,
        backlog: 0,
        drops: 1,
        held_bytes: 33 << 20,
        listener: Some(777),
        owners: vec![crate::sockets::SocketOwner {
            pid: 4242,
            comm: "app".into(),
            cmdline: Some("app --serve".into()),
            pod_uid: Some("0f3c".into()),
            container_id: Some("abc".into()),
            cgroup: Some("/kubepods/pod0f3c/abc".into()),
        }],
    });
    r.snapshots.push(Snapshot {
        at_secs: 10.0,
        totals: r.totals.clone(),
        stacks: vec![SnapshotStack {
            kind: memtrace_common::Kind::Slab,
            stack_id: Some(7),
            caller: "ext4_da_write_begin".into(),
            class: Class::PageCache,
            bytes: 512,
            allocations: 1,
        }],
    });
    r
}

/// What a JSON value is, in the words the schema document uses for types.
fn type_word(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Every field under `v` as a dotted path (`a.b`, `a[].b`), with the types of its values
/// and whether any of them is set (not null, not an empty list).
fn walk(v: &Value, prefix: &str, out: &mut BTreeMap<String, (BTreeSet<&'static str>, bool)>) {
    match v {
        Value::Object(map) => {
            for (key, value) in map {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                let entry = out.entry(path.clone()).or_default();
                entry.0.insert(type_word(value));
                entry.1 |= !(value.is_null() || value.as_array().is_some_and(Vec::is_empty));
                walk(value, &path, out);
            }
        }
        Value::Array(items) => {
            for item in items {
                walk(item, &format!("{prefix}[]"), out);
            }
        }
        _ => {}
    }
}

/// docs/json-schema.md documents every field the JSON report has, with its type, and
/// nothing else; the counters table marks exactly the failure counters.
#[test]
fn every_field_is_documented() {
    const DOC: &str = include_str!("../../../docs/json-schema.md");

    let v = render_json(&full_report());
    let mut emitted = BTreeMap::new();
    walk(&v, "", &mut emitted);

    // The documented fields: rows of the tables whose first column is `field`, as
    // (path, second column: the type, or for counters whether it is a failure counter).
    let mut documented: BTreeMap<&str, &str> = BTreeMap::new();
    let mut header: Vec<&str> = Vec::new();
    let mut duplicates = Vec::new();
    for line in DOC.lines() {
        let Some(row) = line.strip_prefix('|') else {
            header.clear();
            continue;
        };
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        if header.is_empty() {
            header = cells;
        } else if header[0] == "field" && !cells[0].starts_with("---") {
            let path = cells[0].trim_matches('`');
            let second = cells.get(1).copied().unwrap_or_default();
            if documented.insert(path, second).is_some() {
                duplicates.push(format!("{path}: documented twice"));
            }
        }
    }

    let mut problems = duplicates;
    for (path, (types, set)) in &emitted {
        if !set {
            problems.push(format!(
                "{path}: always null or empty in the test report (set it in full_report)"
            ));
        }
        let Some(second) = documented.get(path.as_str()) else {
            problems.push(format!("{path}: not documented (no table row `{path}`)"));
            continue;
        };
        if let Some(name) = path.strip_prefix("counters.") {
            let failure = Counter::ALL
                .iter()
                .any(|c| c.name() == name && c.is_failure());
            if (*second == "yes") != failure {
                problems.push(format!(
                    "{path}: the failure column must say `yes` exactly for failure counters"
                ));
            }
            continue;
        }
        // "integer or null", "array of string": the first word of each alternative.
        let allowed: Vec<&str> = second
            .split(" or ")
            .filter_map(|alt| alt.split_whitespace().next())
            .collect();
        for t in types {
            if !allowed.contains(t) {
                problems.push(format!("{path}: has {t} values, documented as `{second}`"));
            }
        }
    }
    for path in documented.keys() {
        if !emitted.contains_key(*path) {
            problems.push(format!("{path}: documented but not in the JSON report"));
        }
    }
    assert!(
        problems.is_empty(),
        "docs/json-schema.md is out of date with the JSON report:\n  {}",
        problems.join("\n  ")
    );
}
