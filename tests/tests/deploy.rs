//! `deploy/`: the Kubernetes Job and DaemonSet and the Containerfile carry what memtrace needs
//! to run in a pod (host PID namespace, capabilities, tracefs and the host's cgroup tree, an
//! output directory on the node, time to write the report on SIGTERM), and every flag they
//! pass is a real flag of `memtrace trace`.
//!
//! Unprivileged: the manifests are parsed with yaml-rust2, nothing is applied anywhere. The flag
//! check runs `$MEMTRACE_BIN trace --help` and is skipped (loudly) when `MEMTRACE_BIN` is not
//! set (`cargo xtask test` sets it).
//!
//! The checks collect problems instead of panicking at the first one, so that
//! `checks_catch_broken_manifests` can feed them broken copies of the manifests and make sure
//! each breakage is reported.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::PathBuf,
    process::Command,
};

/// memtrace serve's endpoints and default address (`memtrace serve --help`; the serve
/// scenario, tests/tests/serve.rs, requests these paths from a running memtrace serve).
const METRICS_PATH: &str = "/metrics";
const PPROF_HEAP_PATH: &str = "/debug/pprof/heap";
const HEALTH_PATH: &str = "/healthz";
const DEFAULT_LISTEN: &str = "127.0.0.1:9465";

use memtrace_tests::workspace_root;
use yaml_rust2::{Yaml, YamlLoader};

const JOB: &str = "deploy/job.yaml";
const DAEMONSET: &str = "deploy/daemonset.yaml";
const CONTAINERFILE: &str = "deploy/Containerfile";
const SERVE_DAEMONSET: &str = "deploy/daemonset-serve.yaml";
const PODMONITOR: &str = "deploy/podmonitor.yaml";
const NETWORKPOLICY: &str = "deploy/networkpolicy.yaml";
const PARCA: &str = "deploy/parca-scrape.yaml";
const ALLOY: &str = "deploy/alloy-pyroscope.alloy";

/// The namespace deploy/README.md installs into.
const NAMESPACE: &str = "memtrace";
/// The label that tells the serve pods from the trace DaemonSet's and the Job's.
const COMPONENT_LABEL: &str = "app.kubernetes.io/component";
const SERVE_COMPONENT: &str = "serve";
/// The serve container's port name, by which every scraper selects it.
const PORT_NAME: &str = "metrics";

/// Where the binary is in the image (the ENTRYPOINT, and what the DaemonSet's loop runs).
const BINARY: &str = "/usr/local/bin/memtrace";
/// The node directory the reports go to.
const OUTPUT_HOST_DIR: &str = "/var/lib/memtrace";
/// tracefs on the node and in the container (memtrace looks there first).
const TRACEFS: &str = "/sys/kernel/tracing";
/// The host's cgroup tree. It must be mounted at this very path: memtrace scans the cgroup2
/// hierarchy at the mount point of the first cgroup2 entry of /proc/self/mountinfo, which in a
/// container is the runtime's /sys/fs/cgroup (the pod's own subtree) unless the host's tree is
/// mounted over it.
const CGROUP: &str = "/sys/fs/cgroup";

/// The capabilities the manifests grant when they do not use `privileged: true` (why each one:
/// the comments in deploy/job.yaml).
const CAPABILITIES: [&str; 6] = [
    "BPF",
    "PERFMON",
    "SYS_ADMIN",
    "SYSLOG",
    "DAC_READ_SEARCH",
    "SYS_RESOURCE",
];

/// Kernel maps at the defaults (~70 MiB plus the page table, RAM / 512: 32 MiB on a 16 GiB node;
/// charged to the container's memory cgroup on kernels >= 5.11) plus user space (~30-70 MiB):
/// a memory limit below this makes map creation fail on the smallest nodes.
const MIN_MEMORY_LIMIT: u64 = 192 << 20;

/// Time the Job needs beyond `--duration`: image pull, loading the programs, the report.
const JOB_DEADLINE_MARGIN_SECS: u64 = 60;

fn read(relative: &str) -> String {
    let path = workspace_root().join(relative);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn parse(file: &str, text: &str) -> Yaml {
    let mut docs =
        YamlLoader::load_from_str(text).unwrap_or_else(|e| panic!("{file} is not valid YAML: {e}"));
    assert_eq!(
        docs.len(),
        1,
        "{file} must hold exactly one YAML document, it holds {}",
        docs.len()
    );
    docs.remove(0)
}

/// What is wrong with one file.
struct Problems {
    file: String,
    list: Vec<String>,
}

impl Problems {
    fn new(file: &str) -> Self {
        Self {
            file: file.to_owned(),
            list: Vec::new(),
        }
    }

    fn check(&mut self, ok: bool, problem: impl FnOnce() -> String) {
        if !ok {
            self.list.push(problem());
        }
    }

    fn assert_none(&self) {
        assert!(
            self.list.is_empty(),
            "{}:\n  - {}",
            self.file,
            self.list.join("\n  - ")
        );
    }
}

/// The node at a dotted path (`BadValue` when any step is missing).
fn at<'a>(node: &'a Yaml, path: &str) -> &'a Yaml {
    path.split('.').fold(node, |node, key| &node[key])
}

fn str_at<'a>(node: &'a Yaml, path: &str) -> Option<&'a str> {
    at(node, path).as_str()
}

fn list_at<'a>(node: &'a Yaml, path: &str) -> &'a [Yaml] {
    at(node, path).as_vec().map_or(&[], Vec::as_slice)
}

fn strings(list: &[Yaml]) -> Vec<String> {
    list.iter()
        .map(|item| match item {
            Yaml::String(s) => s.clone(),
            Yaml::Integer(i) => i.to_string(),
            Yaml::Real(r) => r.clone(),
            Yaml::Boolean(b) => b.to_string(),
            other => format!("{other:?}"),
        })
        .collect()
}

/// A Kubernetes duration like `10m`, `90s`, `1h30m` (what memtrace's `--duration` takes in the
/// manifests) in seconds.
fn duration_secs(text: &str) -> Option<u64> {
    let (mut total, mut number) = (0u64, String::new());
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return None,
        };
        total += number.parse::<u64>().ok()? * unit;
        number.clear();
    }
    number.is_empty().then_some(total)
}

/// A Kubernetes memory quantity (`256Mi`, `1Gi`, `300M`, `268435456`) in bytes.
fn quantity_bytes(text: &str) -> Option<u64> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let factor: u64 = match suffix {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        _ => return None,
    };
    number.parse::<u64>().ok()?.checked_mul(factor)
}

/// The value of `--name VALUE` or `--name=VALUE` in `args`.
fn option<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if arg == name {
            return it.next().map(String::as_str);
        }
        if let Some(value) = arg
            .strip_prefix(name)
            .and_then(|rest| rest.strip_prefix('='))
        {
            return Some(value);
        }
    }
    None
}

/// The single container of a pod template (it must be named `memtrace`).
fn container<'a>(doc: &'a Yaml, problems: &mut Problems) -> &'a Yaml {
    let containers = list_at(doc, "spec.template.spec.containers");
    problems.check(containers.len() == 1, || {
        format!("expected exactly one container, found {}", containers.len())
    });
    let Some(container) = containers.first() else {
        return &Yaml::BadValue;
    };
    problems.check(str_at(container, "name") == Some("memtrace"), || {
        format!(
            "the container must be named memtrace (the AppArmor annotation for clusters before \
             1.30 names it), it is {:?}",
            str_at(container, "name")
        )
    });
    container
}

/// memtrace's argument list as the container runs it: `args` after the image's ENTRYPOINT
/// (no `command`), or `args` as the `"$@"` of a `/bin/sh -c` loop that runs the binary.
fn memtrace_args(container: &Yaml, problems: &mut Problems) -> Vec<String> {
    let args = strings(list_at(container, "args"));
    let command = at(container, "command");
    if command.is_badvalue() {
        return args;
    }
    let command = strings(command.as_vec().map_or(&[], Vec::as_slice));
    let script = match command.as_slice() {
        [sh, dash_c, script, _name] if sh == "/bin/sh" && dash_c == "-c" => script.as_str(),
        _ => {
            problems.check(false, || {
                format!(
                    "`command` must be absent (ENTRYPOINT {BINARY}) or [/bin/sh, -c, SCRIPT, \
                     NAME] with memtrace's arguments in `args`, it is {command:?}"
                )
            });
            return args;
        }
    };
    let runs = format!("{BINARY} \"$@\"");
    problems.check(script.contains(&runs), || {
        format!("the shell loop must run `{runs}` (memtrace with the `args` list)")
    });
    // Without a trap, SIGTERM kills the shell and the runtime SIGKILLs memtrace before it has
    // written its report. The trap line: `trap 'ACTION' SIGNAL...`.
    let forwards_term = script.lines().map(str::trim).any(|line| {
        line.strip_prefix("trap ")
            .and_then(|rest| rest.rsplit_once('\''))
            .is_some_and(|(action, signals)| {
                action.contains("kill -TERM") && signals.split_whitespace().any(|s| s == "TERM")
            })
    });
    problems.check(forwards_term, || {
        "the shell loop must trap SIGTERM and pass it on to memtrace (`trap '... kill -TERM \
         \"$pid\" ...' TERM`), or memtrace is killed without writing its report"
            .to_owned()
    });
    problems.check(script.contains("wait "), || {
        "the shell loop must `wait` for memtrace".to_owned()
    });
    args
}

/// Checks shared by the Job and the DaemonSet; returns memtrace's arguments.
fn check_pod(doc: &Yaml, problems: &mut Problems) -> Vec<String> {
    let pod = at(doc, "spec.template.spec");
    problems.check(pod.is_hash(), || "no spec.template.spec".to_owned());

    for path in ["metadata.labels", "spec.template.metadata.labels"] {
        // Not `str_at`: the label's name has dots.
        problems.check(
            at(doc, path)["app.kubernetes.io/name"].as_str() == Some("memtrace"),
            || format!("{path} must have app.kubernetes.io/name: memtrace"),
        );
    }

    problems.check(at(pod, "hostPID").as_bool() == Some(true), || {
        "hostPID must be true: memtrace names the processes holding memory and finds their pods \
         through the host's /proc"
            .to_owned()
    });
    problems.check(at(pod, "hostNetwork").as_bool() == Some(true), || {
        "hostNetwork must be true: it brings the host's UTS namespace, so the report header and \
         the memtrace-<host>-<time>.* file names carry the node's name, not the pod's"
            .to_owned()
    });
    let grace = at(pod, "terminationGracePeriodSeconds").as_i64();
    problems.check(grace.is_some_and(|g| g >= 30), || {
        format!(
            "terminationGracePeriodSeconds must be at least 30 (SIGTERM: memtrace writes the \
             complete report before it exits), it is {grace:?}"
        )
    });

    let container = container(doc, problems);
    check_security_context(container, pod, problems);
    check_resources(container, problems);
    let output_mount = check_volumes(container, pod, problems, true);

    let args = memtrace_args(container, problems);
    problems.check(args.first().map(String::as_str) == Some("trace"), || {
        format!("memtrace's arguments must start with the `trace` subcommand: {args:?}")
    });
    problems.check(
        option(&args, "--duration")
            .and_then(duration_secs)
            .is_some(),
        || format!("memtrace's arguments need `--duration` with a duration like 10m: {args:?}"),
    );
    problems.check(args.iter().any(|a| a == "--quiet"), || {
        format!("memtrace's arguments need --quiet (no progress output in pod logs): {args:?}")
    });
    let output_dir = option(&args, "--output-dir");
    problems.check(
        output_dir.is_some() && output_dir == output_mount.as_deref(),
        || {
            format!(
                "--output-dir is {output_dir:?} but the {OUTPUT_HOST_DIR} hostPath volume is \
                 mounted at {output_mount:?}: the reports must land on the node"
            )
        },
    );
    args
}

fn check_security_context(container: &Yaml, pod: &Yaml, problems: &mut Problems) {
    let sc = at(container, "securityContext");
    problems.check(at(sc, "runAsUser").as_i64() == Some(0), || {
        format!(
            "securityContext.runAsUser must be 0, it is {:?}",
            at(sc, "runAsUser")
        )
    });
    if at(sc, "privileged").as_bool() == Some(true) {
        return;
    }
    let normalise = |caps: &[Yaml]| -> BTreeSet<String> {
        strings(caps)
            .into_iter()
            .map(|c| c.trim_start_matches("CAP_").to_owned())
            .collect()
    };
    let added = normalise(list_at(sc, "capabilities.add"));
    let wanted: BTreeSet<String> = CAPABILITIES.iter().map(|c| (*c).to_owned()).collect();
    problems.check(added == wanted, || {
        format!(
            "not privileged, so securityContext.capabilities.add must be exactly {wanted:?}, \
             it is {added:?}"
        )
    });
    let dropped = normalise(list_at(sc, "capabilities.drop"));
    problems.check(dropped.contains("ALL"), || {
        format!("securityContext.capabilities.drop must be [ALL], it is {dropped:?}")
    });
    // Only what the kernel's capability checks allow should decide: no syscall filter, no
    // AppArmor profile (container level, or pod level as the fallback).
    for (field, what) in [
        ("seccompProfile.type", "seccomp (bpf(), perf_event_open())"),
        ("appArmorProfile.type", "AppArmor"),
    ] {
        let value = str_at(sc, field).or_else(|| str_at(pod, &format!("securityContext.{field}")));
        problems.check(value == Some("Unconfined"), || {
            format!("securityContext.{field} must be Unconfined ({what}), it is {value:?}")
        });
    }
}

fn check_resources(container: &Yaml, problems: &mut Problems) {
    let limit = str_at(container, "resources.limits.memory").and_then(quantity_bytes);
    problems.check(limit.is_some_and(|l| l >= MIN_MEMORY_LIMIT), || {
        format!(
            "resources.limits.memory must be at least {} MiB (kernel maps ~70 MiB + RAM / 512, \
             charged to the container on kernels >= 5.11, plus user space), it is {limit:?}",
            MIN_MEMORY_LIMIT >> 20
        )
    });
    let request = str_at(container, "resources.requests.memory").and_then(quantity_bytes);
    problems.check(request.is_some(), || {
        "resources.requests.memory must be set".to_owned()
    });
}

/// Volumes and mounts; returns where the output hostPath volume is mounted. `needs_output`:
/// whether the pod writes reports to the node (`memtrace serve` serves them instead).
fn check_volumes(
    container: &Yaml,
    pod: &Yaml,
    problems: &mut Problems,
    needs_output: bool,
) -> Option<String> {
    let volumes = list_at(pod, "volumes");
    let host_path_of = |name: &str| {
        volumes
            .iter()
            .find(|v| str_at(v, "name") == Some(name))
            .and_then(|v| str_at(v, "hostPath.path"))
    };
    let mounts = list_at(container, "volumeMounts");
    problems.check(!mounts.is_empty(), || "no volumeMounts".to_owned());

    let mut output_mount = None;
    let mut mounted_host_paths = BTreeSet::new();
    for mount in mounts {
        let name = str_at(mount, "name").unwrap_or_default();
        let path = str_at(mount, "mountPath").unwrap_or_default();
        let read_only = at(mount, "readOnly").as_bool() == Some(true);
        problems.check(
            volumes.iter().any(|v| str_at(v, "name") == Some(name)),
            || format!("volumeMount {name:?} ({path}) has no volume of that name"),
        );
        problems.check(path != "/proc" && !path.starts_with("/proc/"), || {
            format!(
                "volumeMount {name:?} mounts over {path}: not needed, hostPID already makes the \
                 container's own /proc show every host process"
            )
        });
        let Some(host_path) = host_path_of(name) else {
            continue;
        };
        mounted_host_paths.insert(host_path.to_owned());
        match host_path {
            OUTPUT_HOST_DIR => {
                problems.check(!read_only, || {
                    format!("the output volume ({OUTPUT_HOST_DIR}) must be writable")
                });
                output_mount = Some(path.to_owned());
            }
            TRACEFS | CGROUP => {
                problems.check(path == host_path, || {
                    format!("hostPath {host_path} must be mounted at {host_path}, not {path}")
                });
                problems.check(read_only, || {
                    format!("hostPath {host_path} must be mounted readOnly: memtrace only reads it")
                });
            }
            _ => {}
        }
    }
    let needed: &[&str] = if needs_output {
        &[TRACEFS, CGROUP, OUTPUT_HOST_DIR]
    } else {
        &[TRACEFS, CGROUP]
    };
    for needed in needed {
        problems.check(mounted_host_paths.contains(*needed), || {
            format!("no hostPath volume for {needed} is mounted into the container")
        });
    }
    if !needs_output {
        return output_mount;
    }
    let output_type = volumes
        .iter()
        .find(|v| str_at(v, "hostPath.path") == Some(OUTPUT_HOST_DIR))
        .and_then(|v| str_at(v, "hostPath.type"));
    problems.check(output_type == Some("DirectoryOrCreate"), || {
        format!(
            "the {OUTPUT_HOST_DIR} hostPath must have type DirectoryOrCreate, it has \
             {output_type:?}"
        )
    });
    output_mount
}

/// All problems of the Job manifest `text`, and memtrace's arguments in it.
fn check_job(text: &str) -> (Problems, Vec<String>) {
    let doc = parse(JOB, text);
    let mut problems = Problems::new(JOB);
    problems.check(str_at(&doc, "apiVersion") == Some("batch/v1"), || {
        format!("apiVersion must be batch/v1: {:?}", at(&doc, "apiVersion"))
    });
    problems.check(str_at(&doc, "kind") == Some("Job"), || {
        format!("kind must be Job: {:?}", at(&doc, "kind"))
    });
    let args = check_pod(&doc, &mut problems);

    problems.check(
        list_at(&doc, "spec.template.spec.containers")
            .iter()
            .all(|c| at(c, "command").is_badvalue()),
        || "the Job runs the image's ENTRYPOINT: its container has no `command`".to_owned(),
    );
    let backoff = at(&doc, "spec.backoffLimit").as_i64();
    problems.check(backoff == Some(0), || {
        format!(
            "spec.backoffLimit must be 0 (a failed session must not be retried), it is {backoff:?}"
        )
    });
    problems.check(
        str_at(&doc, "spec.template.spec.restartPolicy") == Some("Never"),
        || "spec.template.spec.restartPolicy must be Never".to_owned(),
    );
    let deadline = at(&doc, "spec.activeDeadlineSeconds").as_i64();
    let duration = option(&args, "--duration").and_then(duration_secs);
    problems.check(
        deadline
            .and_then(|d| u64::try_from(d).ok())
            .zip(duration)
            .is_some_and(|(d, t)| d >= t + JOB_DEADLINE_MARGIN_SECS),
        || {
            format!(
                "spec.activeDeadlineSeconds ({deadline:?}) must exceed --duration ({duration:?} s) \
                 by at least {JOB_DEADLINE_MARGIN_SECS} s, or the deadline cuts the session short"
            )
        },
    );
    let pod = at(&doc, "spec.template.spec");
    problems.check(
        !at(pod, "nodeSelector").is_badvalue() || !at(pod, "nodeName").is_badvalue(),
        || "the Job must pick its node (nodeSelector or nodeName)".to_owned(),
    );
    (problems, args)
}

/// All problems of the DaemonSet manifest `text`, and memtrace's arguments in it.
fn check_daemonset(text: &str) -> (Problems, Vec<String>) {
    let doc = parse(DAEMONSET, text);
    let mut problems = Problems::new(DAEMONSET);
    problems.check(str_at(&doc, "apiVersion") == Some("apps/v1"), || {
        format!("apiVersion must be apps/v1: {:?}", at(&doc, "apiVersion"))
    });
    problems.check(str_at(&doc, "kind") == Some("DaemonSet"), || {
        format!("kind must be DaemonSet: {:?}", at(&doc, "kind"))
    });
    let args = check_pod(&doc, &mut problems);
    check_daemonset_spec(&doc, &mut problems);
    (problems, args)
}

/// What every DaemonSet here needs: it runs on every node, and its selector matches its pods.
fn check_daemonset_spec(doc: &Yaml, problems: &mut Problems) {
    let tolerations = list_at(doc, "spec.template.spec.tolerations");
    problems.check(
        tolerations.iter().any(|t| {
            str_at(t, "operator") == Some("Exists")
                && at(t, "key").is_badvalue()
                && at(t, "effect").is_badvalue()
        }),
        || {
            "spec.template.spec.tolerations needs `- operator: Exists` (no key, no effect) to run \
             on every node whatever its taints"
                .to_owned()
        },
    );
    // The API server rejects a selector that does not match the template's labels.
    let selector = at(doc, "spec.selector.matchLabels").as_hash();
    let labels = at(doc, "spec.template.metadata.labels");
    problems.check(
        selector.is_some_and(|s| {
            !s.is_empty()
                && s.iter()
                    .all(|(k, v)| k.as_str().is_some_and(|k| labels[k] == *v))
        }),
        || "spec.selector.matchLabels must be non-empty and match the template's labels".to_owned(),
    );
}

/// `labels` (a YAML map) as string pairs.
fn label_map(labels: &Yaml) -> BTreeMap<String, String> {
    labels
        .as_hash()
        .map(|h| {
            h.iter()
                .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether a `matchLabels` selector selects pods with `labels`, and selects the serve pods
/// only (not the trace DaemonSet's or the Job's).
fn selects_serve_pods(selector: &Yaml, labels: &BTreeMap<String, String>) -> bool {
    let selector = label_map(selector);
    !selector.is_empty()
        && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
        && selector.get(COMPONENT_LABEL).map(String::as_str) == Some(SERVE_COMPONENT)
}

/// What the scrape configurations and the NetworkPolicy must agree on with the serve
/// DaemonSet.
#[derive(Debug, Default)]
struct ServePod {
    /// The pod template's labels.
    labels: BTreeMap<String, String>,
    /// The `containerPort` of the port named [`PORT_NAME`].
    port: Option<i64>,
}

/// The TCP port of a `--listen` value (`0.0.0.0:9465`, `[::]:9465`), and whether its address
/// is unspecified (every address of the pod).
fn listen_port(value: &str) -> Option<(u16, bool)> {
    let addr: std::net::SocketAddr = value.parse().ok()?;
    Some((addr.port(), addr.ip().is_unspecified()))
}

/// All problems of `deploy/daemonset-serve.yaml`, memtrace's arguments in it and what the
/// other files must agree on.
fn check_serve_daemonset(text: &str) -> (Problems, Vec<String>, ServePod) {
    let doc = parse(SERVE_DAEMONSET, text);
    let mut problems = Problems::new(SERVE_DAEMONSET);
    problems.check(str_at(&doc, "apiVersion") == Some("apps/v1"), || {
        format!("apiVersion must be apps/v1: {:?}", at(&doc, "apiVersion"))
    });
    problems.check(str_at(&doc, "kind") == Some("DaemonSet"), || {
        format!("kind must be DaemonSet: {:?}", at(&doc, "kind"))
    });
    check_daemonset_spec(&doc, &mut problems);
    let labels = label_map(at(&doc, "spec.template.metadata.labels"));
    for path in ["metadata.labels", "spec.template.metadata.labels"] {
        problems.check(
            at(&doc, path)["app.kubernetes.io/name"].as_str() == Some("memtrace"),
            || format!("{path} must have app.kubernetes.io/name: memtrace"),
        );
    }
    problems.check(
        labels.get(COMPONENT_LABEL).map(String::as_str) == Some(SERVE_COMPONENT),
        || {
            format!(
                "spec.template.metadata.labels must have {COMPONENT_LABEL}: {SERVE_COMPONENT} \
                 (the PodMonitor, NetworkPolicy, Parca and Alloy select the serve pods by it)"
            )
        },
    );

    let pod = at(&doc, "spec.template.spec");
    problems.check(at(pod, "hostPID").as_bool() == Some(true), || {
        "hostPID must be true: memtrace names the processes holding memory and finds their pods \
         through the host's /proc"
            .to_owned()
    });
    problems.check(at(pod, "hostNetwork").as_bool() == Some(false), || {
        "hostNetwork must be false (explicitly): the serve pod listens, and NetworkPolicies do \
         not apply to host-network pods; with hostNetwork its port would be on the node's \
         address for anyone who can reach the node"
            .to_owned()
    });
    let grace = at(pod, "terminationGracePeriodSeconds").as_i64();
    problems.check(grace.is_some_and(|g| g >= 30), || {
        format!("terminationGracePeriodSeconds must be at least 30, it is {grace:?}")
    });

    let container = container(&doc, &mut problems);
    check_security_context(container, pod, &mut problems);
    check_resources(container, &mut problems);
    check_volumes(container, pod, &mut problems, false);
    problems.check(at(container, "command").is_badvalue(), || {
        "the serve container runs the image's ENTRYPOINT (no `command`): the session does not \
         end, no restart loop is needed"
            .to_owned()
    });

    let port = list_at(container, "ports")
        .iter()
        .find(|p| str_at(p, "name") == Some(PORT_NAME));
    let container_port = port.and_then(|p| at(p, "containerPort").as_i64());
    problems.check(container_port.is_some(), || {
        format!("the container needs a port named {PORT_NAME:?} (the scrapers select it by name)")
    });
    problems.check(
        port.is_some_and(|p| matches!(str_at(p, "protocol"), None | Some("TCP"))),
        || format!("port {PORT_NAME:?} must be TCP"),
    );

    let args = strings(list_at(container, "args"));
    problems.check(args.first().map(String::as_str) == Some("serve"), || {
        format!("memtrace's arguments must start with the `serve` subcommand: {args:?}")
    });
    let listen = option(&args, "--listen");
    let parsed = listen.and_then(listen_port);
    problems.check(parsed.is_some_and(|(_, any)| any), || {
        format!(
            "--listen must be 0.0.0.0:PORT or [::]:PORT (every address of the pod's own \
             network namespace; memtrace's default is loopback, which the scrapers cannot \
             reach), it is {listen:?}"
        )
    });
    problems.check(
        parsed.is_some_and(|(p, _)| Some(i64::from(p)) == container_port),
        || {
            format!(
                "--listen {listen:?} must use the port of containerPort {PORT_NAME:?} \
                 ({container_port:?})"
            )
        },
    );
    problems.check(
        option(&args, "--interval")
            .and_then(duration_secs)
            .is_some(),
        || format!("memtrace's arguments need `--interval` with a duration like 1m: {args:?}"),
    );
    problems.check(args.iter().any(|a| a == "--quiet"), || {
        format!("memtrace's arguments need --quiet (no progress output in pod logs): {args:?}")
    });

    let annotations = at(&doc, "spec.template.metadata.annotations");
    let port_text = container_port.map(|p| p.to_string());
    for (key, want) in [
        ("prometheus.io/scrape", Some("true".to_owned())),
        ("prometheus.io/port", port_text.clone()),
        ("prometheus.io/path", Some(METRICS_PATH.to_owned())),
    ] {
        let value = annotations[key].as_str();
        problems.check(value.is_some() && value == want.as_deref(), || {
            format!(
                "spec.template.metadata.annotations needs {key}: {want:?} (strings), it has \
                 {value:?}"
            )
        });
    }
    for probe in ["startupProbe", "livenessProbe"] {
        let get = at(container, &format!("{probe}.httpGet"));
        let probe_port = match &get["port"] {
            Yaml::String(name) => Some(name.clone()),
            Yaml::Integer(n) => Some(n.to_string()),
            _ => None,
        };
        problems.check(
            str_at(get, "path") == Some(HEALTH_PATH)
                && (probe_port.as_deref() == Some(PORT_NAME) || probe_port == port_text),
            || {
                format!(
                    "{probe} must be an httpGet of {HEALTH_PATH} on port {PORT_NAME:?}, it is \
                     path {:?} port {probe_port:?}",
                    str_at(get, "path")
                )
            },
        );
    }
    (
        problems,
        args,
        ServePod {
            labels,
            port: container_port,
        },
    )
}

/// The serve pods as the DaemonSet makes them (the other files are checked against it).
fn serve_pod() -> ServePod {
    check_serve_daemonset(&read(SERVE_DAEMONSET)).2
}

fn check_podmonitor(text: &str, serve: &ServePod) -> Problems {
    let doc = parse(PODMONITOR, text);
    let mut problems = Problems::new(PODMONITOR);
    problems.check(
        str_at(&doc, "apiVersion") == Some("monitoring.coreos.com/v1")
            && str_at(&doc, "kind") == Some("PodMonitor"),
        || "must be a monitoring.coreos.com/v1 PodMonitor".to_owned(),
    );
    problems.check(
        selects_serve_pods(at(&doc, "spec.selector.matchLabels"), &serve.labels),
        || {
            format!(
                "spec.selector.matchLabels must select the serve pods ({:?}) and only them",
                serve.labels
            )
        },
    );
    let namespaces = strings(list_at(&doc, "spec.namespaceSelector.matchNames"));
    problems.check(namespaces.iter().any(|n| n == NAMESPACE), || {
        format!("spec.namespaceSelector.matchNames must include {NAMESPACE}: {namespaces:?}")
    });
    let endpoints = list_at(&doc, "spec.podMetricsEndpoints");
    problems.check(!endpoints.is_empty(), || {
        "spec.podMetricsEndpoints is empty".to_owned()
    });
    for e in endpoints {
        problems.check(str_at(e, "port") == Some(PORT_NAME), || {
            format!(
                "podMetricsEndpoints[].port must be the serve container's port name {PORT_NAME:?}, \
                 it is {:?}",
                str_at(e, "port")
            )
        });
        problems.check(str_at(e, "path") == Some(METRICS_PATH), || {
            format!("podMetricsEndpoints[].path must be {METRICS_PATH}")
        });
        let node_label = list_at(e, "relabelings").iter().any(|r| {
            strings(list_at(r, "sourceLabels")) == ["__meta_kubernetes_pod_node_name"]
                && str_at(r, "targetLabel") == Some("node")
        });
        problems.check(node_label, || {
            "podMetricsEndpoints[].relabelings must copy __meta_kubernetes_pod_node_name to the \
             `node` label (memtrace_info{host} is the pod's name)"
                .to_owned()
        });
    }
    problems
}

fn check_networkpolicy(text: &str, serve: &ServePod) -> Problems {
    let doc = parse(NETWORKPOLICY, text);
    let mut problems = Problems::new(NETWORKPOLICY);
    problems.check(
        str_at(&doc, "apiVersion") == Some("networking.k8s.io/v1")
            && str_at(&doc, "kind") == Some("NetworkPolicy"),
        || "must be a networking.k8s.io/v1 NetworkPolicy".to_owned(),
    );
    problems.check(
        selects_serve_pods(at(&doc, "spec.podSelector.matchLabels"), &serve.labels),
        || {
            format!(
                "spec.podSelector.matchLabels must select the serve pods ({:?}) and only them",
                serve.labels
            )
        },
    );
    let types = strings(list_at(&doc, "spec.policyTypes"));
    problems.check(types.iter().any(|t| t == "Ingress"), || {
        format!("spec.policyTypes must include Ingress: {types:?}")
    });
    let rules = list_at(&doc, "spec.ingress");
    problems.check(!rules.is_empty(), || {
        "spec.ingress is empty: the scrapers could not connect".to_owned()
    });
    let port_text = serve.port.map(|p| p.to_string());
    for rule in rules {
        problems.check(!list_at(rule, "from").is_empty(), || {
            "every ingress rule needs `from` (a rule without it admits everyone)".to_owned()
        });
        let ports = list_at(rule, "ports");
        problems.check(
            !ports.is_empty()
                && ports.iter().all(|p| {
                    let port = match &p["port"] {
                        Yaml::Integer(n) => Some(n.to_string()),
                        Yaml::String(s) => Some(s.clone()),
                        _ => None,
                    };
                    (port == port_text || port.as_deref() == Some(PORT_NAME))
                        && matches!(str_at(p, "protocol"), None | Some("TCP"))
                }),
            || {
                format!(
                    "every ingress rule must admit only TCP port {port_text:?} ({PORT_NAME}), \
                     the serve port"
                )
            },
        );
    }
    if types.iter().any(|t| t == "Egress") {
        problems.check(list_at(&doc, "spec.egress").is_empty(), || {
            "memtrace connects nowhere: spec.egress should admit nothing".to_owned()
        });
    }
    problems
}

/// The Go runtime's profiles that Parca and Alloy scrape by default and memtrace does not
/// serve (they must be turned off, or every scrape of them fails with 404).
const GO_ONLY_PROFILES: [&str; 4] = ["process_cpu", "goroutine", "block", "mutex"];

fn check_parca(text: &str) -> Problems {
    let doc = parse(PARCA, text);
    let mut problems = Problems::new(PARCA);
    let jobs = list_at(&doc, "scrape_configs");
    problems.check(jobs.len() == 1, || {
        format!("one scrape_configs entry expected, found {}", jobs.len())
    });
    let Some(job) = jobs.first() else {
        return problems;
    };
    problems.check(
        str_at(job, "job_name").is_some_and(|n| !n.is_empty()),
        || "job_name is required".to_owned(),
    );
    let sd = list_at(job, "kubernetes_sd_configs");
    problems.check(
        sd.len() == 1 && str_at(&sd[0], "role") == Some("pod"),
        || "one kubernetes_sd_configs entry with role: pod expected".to_owned(),
    );
    if let Some(sd) = sd.first() {
        let namespaces = strings(list_at(sd, "namespaces.names"));
        problems.check(namespaces.iter().any(|n| n == NAMESPACE), || {
            format!("kubernetes_sd_configs[0].namespaces.names must include {NAMESPACE}")
        });
        let selector = format!("{COMPONENT_LABEL}={SERVE_COMPONENT}");
        problems.check(
            list_at(sd, "selectors")
                .iter()
                .any(|s| str_at(s, "label").is_some_and(|l| l.contains(&selector))),
            || format!("kubernetes_sd_configs[0].selectors must select {selector}"),
        );
    }
    let keeps_port = list_at(job, "relabel_configs").iter().any(|r| {
        strings(list_at(r, "source_labels")) == ["__meta_kubernetes_pod_container_port_name"]
            && str_at(r, "regex") == Some(PORT_NAME)
            && str_at(r, "action") == Some("keep")
    });
    problems.check(keeps_port, || {
        format!(
            "relabel_configs must keep only the container port named {PORT_NAME:?} (one target \
             per pod, on memtrace's port)"
        )
    });
    let interval = str_at(job, "scrape_interval").and_then(duration_secs);
    let timeout = str_at(job, "scrape_timeout").and_then(duration_secs);
    problems.check(timeout.is_none() || timeout > interval, || {
        "Parca refuses a scrape_timeout that is not longer than scrape_interval".to_owned()
    });
    let pprof = at(job, "profiling_config.pprof_config");
    let memory = &pprof["memory"];
    problems.check(
        at(memory, "enabled").as_bool() == Some(true)
            && str_at(memory, "path") == Some(PPROF_HEAP_PATH)
            && at(memory, "delta").as_bool() != Some(true),
        || {
            format!(
                "profiling_config.pprof_config.memory must be enabled, with path \
                 {PPROF_HEAP_PATH} and delta false (the profile is cumulative)"
            )
        },
    );
    for profile in GO_ONLY_PROFILES {
        problems.check(
            at(&pprof[profile], "enabled").as_bool() == Some(false),
            || {
                format!(
                    "profiling_config.pprof_config.{profile}.enabled must be false: memtrace has \
                     no such profile"
                )
            },
        );
    }
    problems
}

/// The body of the first `header {` block in Alloy configuration `text` (comment lines
/// dropped), up to its matching brace.
fn alloy_block<'a>(text: &'a str, header: &str) -> Option<&'a str> {
    let open = format!("{header} {{");
    let start = text.find(&open)? + open.len();
    let mut depth = 1;
    let mut in_string = false;
    for (i, c) in text[start..].char_indices() {
        match c {
            '"' => in_string = !in_string,
            '{' if !in_string => depth += 1,
            '}' if !in_string => {
                depth -= 1;
                if depth == 0 {
                    return Some(&text[start..start + i]);
                }
            }
            _ => {}
        }
    }
    None
}

/// `key = value` attributes at the top of an Alloy block (nested blocks skipped).
fn alloy_attributes(block: &str) -> BTreeMap<String, String> {
    let mut depth = 0;
    let mut out = BTreeMap::new();
    for line in block.lines().map(str::trim) {
        if depth == 0 {
            if let Some((key, value)) = line.split_once('=') {
                if !key.contains('{') {
                    out.insert(key.trim().to_owned(), value.trim().to_owned());
                }
            }
        }
        depth += line.matches('{').count();
        depth -= line.matches('}').count().min(depth);
    }
    out
}

fn check_alloy(text: &str) -> Problems {
    let mut problems = Problems::new(ALLOY);
    let text: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .map(|l| format!("{l}\n"))
        .collect();
    let quoted = |s: &str| format!("\"{s}\"");
    let Some(scrape) = alloy_block(&text, "pyroscope.scrape \"memtrace\"") else {
        problems.check(false, || {
            "no pyroscope.scrape \"memtrace\" block".to_owned()
        });
        return problems;
    };
    let profiling = alloy_block(scrape, "profiling_config").unwrap_or_default();
    let memory = alloy_block(profiling, "profile.memory").map(alloy_attributes);
    problems.check(
        memory.as_ref().is_some_and(|m| {
            m.get("enabled").map(String::as_str) == Some("true")
                && m.get("path") == Some(&quoted(PPROF_HEAP_PATH))
                && m.get("delta").is_none_or(|d| d == "false")
        }),
        || {
            format!(
                "pyroscope.scrape > profiling_config > profile.memory must be enabled, with path \
                 {PPROF_HEAP_PATH} and delta false (the profile is cumulative): {memory:?}"
            )
        },
    );
    for profile in GO_ONLY_PROFILES {
        let attrs = alloy_block(profiling, &format!("profile.{profile}")).map(alloy_attributes);
        problems.check(
            attrs
                .as_ref()
                .is_some_and(|a| a.get("enabled").map(String::as_str) == Some("false")),
            || {
                format!(
                    "profile.{profile} must be turned off (enabled = false): memtrace has no such \
                     profile, pyroscope.scrape fetches it by default"
                )
            },
        );
    }
    let discovery = alloy_block(&text, "discovery.kubernetes \"memtrace\"").unwrap_or_default();
    let selector = format!("{COMPONENT_LABEL}={SERVE_COMPONENT}");
    problems.check(
        alloy_block(discovery, "selectors")
            .map(alloy_attributes)
            .and_then(|a| a.get("label").cloned())
            .is_some_and(|l| l.contains(&selector)),
        || format!("discovery.kubernetes must select {selector}"),
    );
    problems.check(
        alloy_block(discovery, "namespaces").is_some_and(|n| n.contains(&quoted(NAMESPACE))),
        || format!("discovery.kubernetes must look in the {NAMESPACE} namespace"),
    );
    let relabel = alloy_block(&text, "discovery.relabel \"memtrace\"").unwrap_or_default();
    let mut keeps_port = false;
    let mut service_name = false;
    let mut rest = relabel;
    while let Some(rule) = alloy_block(rest, "rule") {
        let attrs = alloy_attributes(rule);
        keeps_port |= attrs.get("source_labels").map(String::as_str)
            == Some("[\"__meta_kubernetes_pod_container_port_name\"]")
            && attrs.get("regex") == Some(&quoted(PORT_NAME))
            && attrs.get("action") == Some(&quoted("keep"));
        service_name |= attrs.get("target_label") == Some(&quoted("service_name"));
        let end = rest.find(rule).map_or(rest.len(), |at| at + rule.len());
        rest = &rest[end..];
    }
    problems.check(keeps_port, || {
        format!("discovery.relabel must keep only the container port named {PORT_NAME:?}")
    });
    problems.check(service_name, || {
        "discovery.relabel must set service_name (pyroscope.scrape needs one)".to_owned()
    });
    problems.check(
        alloy_attributes(scrape).get("targets").map(String::as_str)
            == Some("discovery.relabel.memtrace.output"),
        || "pyroscope.scrape must scrape discovery.relabel.memtrace.output".to_owned(),
    );
    problems
}

fn image(file: &str, text: &str) -> Option<String> {
    let doc = parse(file, text);
    let containers = list_at(&doc, "spec.template.spec.containers");
    containers
        .first()
        .and_then(|c| str_at(c, "image"))
        .map(str::to_owned)
}

/// The Dockerfile instructions of the last stage (after the last FROM), continuation lines
/// joined, comments dropped, as (INSTRUCTION, rest).
fn final_stage(containerfile: &str) -> Vec<(String, String)> {
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in containerfile.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
            continue;
        }
        current.push_str(trimmed);
        let (instruction, rest) = current
            .split_once(char::is_whitespace)
            .unwrap_or((&current, ""));
        instructions.push((instruction.to_ascii_uppercase(), rest.trim().to_owned()));
        current.clear();
    }
    let last_from = instructions
        .iter()
        .rposition(|(i, _)| i == "FROM")
        .expect("the Containerfile has no FROM");
    instructions.split_off(last_from)
}

/// The long flags `memtrace trace --help` defines (from its option lines, not its prose).
fn help_flags(help: &str) -> BTreeSet<String> {
    help.lines()
        .map(str::trim_start)
        .filter(|line| line.starts_with('-'))
        .flat_map(|line| {
            line.split(|c: char| c.is_whitespace() || c == ',' || c == '=' || c == '<' || c == '[')
                .filter(|word| word.starts_with("--") && word.len() > 2)
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn job_manifest() {
    let (problems, _) = check_job(&read(JOB));
    problems.assert_none();
}

#[test]
fn daemonset_manifest() {
    let (problems, _) = check_daemonset(&read(DAEMONSET));
    problems.assert_none();
}

#[test]
fn both_manifests_use_the_same_image() {
    let job = image(JOB, &read(JOB));
    let daemonset = image(DAEMONSET, &read(DAEMONSET));
    assert!(
        job.as_deref().is_some_and(|i| !i.is_empty()),
        "{JOB} has no image"
    );
    assert_eq!(
        job, daemonset,
        "{JOB} and {DAEMONSET} must run the same image"
    );
    let serve = image(SERVE_DAEMONSET, &read(SERVE_DAEMONSET));
    assert_eq!(
        job, serve,
        "{JOB} and {SERVE_DAEMONSET} must run the same image"
    );
}

#[test]
fn both_manifests_pass_the_same_memtrace_arguments() {
    let (_, job) = check_job(&read(JOB));
    let (_, daemonset) = check_daemonset(&read(DAEMONSET));
    assert_eq!(
        job, daemonset,
        "the Job and the DaemonSet should run the same session (change both together)"
    );
}

#[test]
fn containerfile_final_stage_runs_memtrace() {
    let text = read(CONTAINERFILE);
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with("RUN") && l.contains("cargo xtask build")),
        "{CONTAINERFILE}: the build stage must run `cargo xtask build` (it embeds the eBPF object)"
    );
    let stage = final_stage(&text);
    let entrypoint = stage
        .iter()
        .rev()
        .find(|(i, _)| i == "ENTRYPOINT")
        .map(|(_, rest)| rest.as_str());
    let parsed: Option<Vec<String>> = entrypoint.and_then(|e| serde_json::from_str(e).ok());
    assert_eq!(
        parsed,
        Some(vec![BINARY.to_owned()]),
        "{CONTAINERFILE}: the final stage needs ENTRYPOINT [\"{BINARY}\"] (exec form), it has \
         {entrypoint:?}"
    );
    assert!(
        stage
            .iter()
            .any(|(i, rest)| i == "COPY" && rest.contains("--from=") && rest.ends_with(BINARY)),
        "{CONTAINERFILE}: the final stage must COPY --from=<build stage> the binary to {BINARY}"
    );
    let ignore = read(".dockerignore");
    assert!(
        ignore
            .lines()
            .any(|l| l.trim().trim_end_matches('/') == "target"),
        ".dockerignore must exclude target/ (gigabytes of build output in the build context)"
    );
}

#[test]
fn manifest_flags_exist_in_memtrace_trace_help() {
    let (_, job) = check_job(&read(JOB));
    let (_, daemonset) = check_daemonset(&read(DAEMONSET));
    let used: BTreeSet<String> = job
        .iter()
        .chain(&daemonset)
        .filter(|a| a.starts_with("--"))
        .map(|a| a.split('=').next().unwrap_or(a).to_owned())
        .collect();
    assert!(
        used.contains("--duration"),
        "no flags found in the manifests"
    );

    let Some(bin) = std::env::var_os("MEMTRACE_BIN").filter(|b| !b.is_empty()) else {
        eprintln!(
            "\n==================================================================\n\
             SKIPPED manifest_flags_exist_in_memtrace_trace_help: MEMTRACE_BIN is not set, so \
             the flags the manifests pass ({used:?}) were NOT checked against \
             `memtrace trace --help`. Run `cargo xtask test`, or set MEMTRACE_BIN to a built \
             memtrace binary.\n\
             ==================================================================\n"
        );
        return;
    };
    let bin = PathBuf::from(bin);
    let output = Command::new(&bin)
        .args(["trace", "--help"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} trace --help: {e}", bin.display()));
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{} trace --help failed ({}):\n{}{}",
        bin.display(),
        output.status,
        help,
        String::from_utf8_lossy(&output.stderr)
    );
    let known = help_flags(&help);
    let unknown: Vec<&String> = used.iter().filter(|f| !known.contains(*f)).collect();
    assert!(
        unknown.is_empty(),
        "the manifests pass {unknown:?}, which `{} trace --help` does not define (it defines \
         {known:?})",
        bin.display()
    );
}

/// The checks above must be able to fail: each broken copy of a manifest must be reported, by
/// a problem that names what is wrong.
/// The problems the check of `file` finds in `text` (the serve files against the serve
/// DaemonSet as it is on disk).
fn problems_of(file: &str, text: &str) -> Problems {
    match file {
        JOB => check_job(text).0,
        DAEMONSET => check_daemonset(text).0,
        SERVE_DAEMONSET => check_serve_daemonset(text).0,
        PODMONITOR => check_podmonitor(text, &serve_pod()),
        NETWORKPOLICY => check_networkpolicy(text, &serve_pod()),
        PARCA => check_parca(text),
        ALLOY => check_alloy(text),
        other => panic!("no check for {other}"),
    }
}

#[test]
fn serve_daemonset_manifest() {
    let (problems, _, serve) = check_serve_daemonset(&read(SERVE_DAEMONSET));
    problems.assert_none();
    // The scrapers' port is memtrace's default port (docs and examples say 9465).
    let default_port = DEFAULT_LISTEN
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse::<i64>().ok());
    assert_eq!(serve.port, default_port, "{SERVE_DAEMONSET}: port");
}

#[test]
fn podmonitor_scrapes_the_serve_pods() {
    check_podmonitor(&read(PODMONITOR), &serve_pod()).assert_none();
}

#[test]
fn networkpolicy_admits_only_the_scrapers_on_the_serve_port() {
    check_networkpolicy(&read(NETWORKPOLICY), &serve_pod()).assert_none();
}

#[test]
fn parca_scrapes_the_heap_profile() {
    check_parca(&read(PARCA)).assert_none();
}

#[test]
fn alloy_scrapes_the_heap_profile() {
    check_alloy(&read(ALLOY)).assert_none();
}

/// The flags `deploy/daemonset-serve.yaml` passes exist in `memtrace serve --help`.
#[test]
fn serve_manifest_flags_exist_in_memtrace_serve_help() {
    let (_, args, _) = check_serve_daemonset(&read(SERVE_DAEMONSET));
    let used: BTreeSet<String> = args
        .iter()
        .filter(|a| a.starts_with("--"))
        .map(|a| a.split('=').next().unwrap_or(a).to_owned())
        .collect();
    assert!(
        used.contains("--listen"),
        "no flags found in {SERVE_DAEMONSET}"
    );
    let Some(bin) = std::env::var_os("MEMTRACE_BIN").filter(|b| !b.is_empty()) else {
        eprintln!(
            "\n==================================================================\n\
             SKIPPED serve_manifest_flags_exist_in_memtrace_serve_help: MEMTRACE_BIN is not set, \
             so the flags {SERVE_DAEMONSET} passes ({used:?}) were NOT checked against \
             `memtrace serve --help`. Run `cargo xtask test`.\n\
             ==================================================================\n"
        );
        return;
    };
    let bin = PathBuf::from(bin);
    let output = Command::new(&bin)
        .args(["serve", "--help"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} serve --help: {e}", bin.display()));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{} serve --help failed ({}):\n{help}{stderr}",
        bin.display(),
        output.status,
    );
    let known = help_flags(&help);
    let unknown: Vec<&String> = used.iter().filter(|f| !known.contains(*f)).collect();
    assert!(
        unknown.is_empty(),
        "{SERVE_DAEMONSET} passes {unknown:?}, which `{} serve --help` does not define (it \
         defines {known:?})",
        bin.display()
    );
}

#[test]
fn checks_catch_broken_manifests() {
    // (file, text, replaced by, a word the problem must contain)
    let cases = [
        (JOB, "hostPID: true", "hostPID: false", "hostPID"),
        (DAEMONSET, "hostPID: true", "hostPID: false", "hostPID"),
        (JOB, "backoffLimit: 0", "backoffLimit: 6", "backoffLimit"),
        (
            JOB,
            "activeDeadlineSeconds: 900",
            "activeDeadlineSeconds: 600",
            "activeDeadlineSeconds",
        ),
        (JOB, "runAsUser: 0\n", "runAsUser: 1000\n", "runAsUser"),
        (
            JOB,
            "DAC_READ_SEARCH, SYS_RESOURCE]",
            "DAC_READ_SEARCH]",
            "capabilities.add",
        ),
        (DAEMONSET, "            - --quiet\n", "", "--quiet"),
        (
            DAEMONSET,
            "mountPath: /out",
            "mountPath: /output",
            "--output-dir",
        ),
        (
            DAEMONSET,
            "- operator: Exists",
            "- operator: Equal",
            "tolerations",
        ),
        (
            DAEMONSET,
            "GracePeriodSeconds: 60",
            "GracePeriodSeconds: 5",
            "terminationGrace",
        ),
        (
            DAEMONSET,
            "2>/dev/null; fi' TERM INT",
            "2>/dev/null; fi' HUP",
            "trap SIGTERM",
        ),
        (
            JOB,
            "- name: cgroup\n          hostPath",
            "- name: cg\n          hostPath",
            "no volume",
        ),
        (
            JOB,
            "path: /sys/kernel/tracing",
            "path: /sys/kernel/debug",
            "/sys/kernel/tracing",
        ),
        (
            JOB,
            "type: Unconfined\n            #",
            "type: RuntimeDefault\n            #",
            "seccomp",
        ),
        (
            SERVE_DAEMONSET,
            "hostNetwork: false",
            "hostNetwork: true",
            "hostNetwork",
        ),
        (
            SERVE_DAEMONSET,
            "- 0.0.0.0:9465",
            "- 127.0.0.1:9465",
            "--listen",
        ),
        (
            SERVE_DAEMONSET,
            "- 0.0.0.0:9465",
            "- 0.0.0.0:9464",
            "containerPort",
        ),
        (
            SERVE_DAEMONSET,
            "prometheus.io/port: \"9465\"",
            "prometheus.io/port: \"9100\"",
            "prometheus.io/port",
        ),
        (
            SERVE_DAEMONSET,
            "prometheus.io/path: /metrics",
            "prometheus.io/path: /",
            "prometheus.io/path",
        ),
        (
            SERVE_DAEMONSET,
            "component: serve\n      annotations",
            "component: daemonset\n      annotations",
            "app.kubernetes.io/component",
        ),
        (
            SERVE_DAEMONSET,
            "path: /healthz\n              port: metrics\n            periodSeconds: 60",
            "path: /metrics\n              port: metrics\n            periodSeconds: 60",
            "livenessProbe",
        ),
        (PODMONITOR, "- port: metrics", "- port: http", "port name"),
        (PODMONITOR, "- memtrace\n", "- default\n", "matchNames"),
        (
            PODMONITOR,
            "app.kubernetes.io/component: serve\n  namespaceSelector",
            "app.kubernetes.io/component: daemonset\n  namespaceSelector",
            "selector",
        ),
        (NETWORKPOLICY, "port: 9465", "port: 9466", "9465"),
        (
            NETWORKPOLICY,
            "  ingress:\n    - from:",
            "  ingress:\n    - fromm:",
            "`from`",
        ),
        (
            PARCA,
            "path: /debug/pprof/heap",
            "path: /debug/pprof/profile",
            "/debug/pprof/heap",
        ),
        (PARCA, "delta: false", "delta: true", "delta"),
        (
            PARCA,
            "goroutine:\n          enabled: false",
            "goroutine:\n          enabled: true",
            "goroutine",
        ),
        (PARCA, "regex: metrics", "regex: http", "port named"),
        (
            PARCA,
            "scrape_interval: 60s",
            "scrape_interval: 60s\n    scrape_timeout: 30s",
            "scrape_timeout",
        ),
        (ALLOY, "delta   = false", "delta   = true", "delta"),
        (
            ALLOY,
            "profile.mutex {\n      enabled = false",
            "profile.mutex {\n      enabled = true",
            "profile.mutex",
        ),
        (
            ALLOY,
            "regex         = \"metrics\"",
            "regex         = \"http\"",
            "port named",
        ),
        (
            ALLOY,
            "component=serve\"",
            "component=daemonset\"",
            "select",
        ),
        (
            ALLOY,
            "target_label = \"service_name\"",
            "target_label = \"service\"",
            "service_name",
        ),
    ];
    for (file, from, to, expect) in cases {
        let text = read(file);
        assert_eq!(
            text.matches(from).count(),
            1,
            "{file} no longer contains {from:?} exactly once: update this test's mutation"
        );
        let broken = text.replacen(from, to, 1);
        let problems = problems_of(file, &broken);
        assert!(
            problems.list.iter().any(|p| p.contains(expect)),
            "{file} with {from:?} -> {to:?}: expected a problem mentioning {expect:?}, got {:?}",
            problems.list
        );
    }
}

#[test]
fn helpers() {
    assert_eq!(duration_secs("10m"), Some(600));
    assert_eq!(duration_secs("1h30m"), Some(5400));
    assert_eq!(duration_secs("45s"), Some(45));
    assert_eq!(duration_secs("10"), None);
    assert_eq!(duration_secs("10x"), None);
    assert_eq!(quantity_bytes("256Mi"), Some(256 << 20));
    assert_eq!(quantity_bytes("1Gi"), Some(1 << 30));
    assert_eq!(quantity_bytes("lots"), None);
    let args: Vec<String> = ["trace", "--duration", "10m", "--output-dir=/out"]
        .map(String::from)
        .to_vec();
    assert_eq!(option(&args, "--duration"), Some("10m"));
    assert_eq!(option(&args, "--output-dir"), Some("/out"));
    assert_eq!(option(&args, "--quiet"), None);

    // clap's help layout: flags only from option lines, not from the prose.
    let help =
        "Usage: memtrace trace [OPTIONS]\n\nOptions:\n      --duration <DURATION>\n          \
                How long to trace; see also --output-dir\n          [default: 30s]\n      \
                --classic-tracepoints\n          Attach ...\n  -h, --help\n          Print help\n";
    let flags = help_flags(help);
    assert_eq!(
        flags,
        ["--classic-tracepoints", "--duration", "--help"]
            .map(String::from)
            .into_iter()
            .collect()
    );

    let stage = final_stage("FROM a AS b\nRUN x \\\n  y\nFROM c\n# c\nENTRYPOINT [\"/e\"]\n");
    assert_eq!(
        stage,
        vec![
            ("FROM".to_owned(), "c".to_owned()),
            ("ENTRYPOINT".to_owned(), "[\"/e\"]".to_owned())
        ]
    );
}
