//! Replays the recorded kube-apiserver 1.32 request/response pairs (`golden/`) against kube-sim in
//! the order they were recorded, and compares status codes, content types, the headers that were
//! recorded (Warning, Retry-After) and the bodies structurally (ignoring each file's volatile
//! paths and managedFields). Golden RVs and UIDs are mapped to the ones kube-sim hands out.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Http, IdMap, compare, load_golden, split_path, volatile_paths};
use kube_sim::{KubeSim, SimOptions};
use serde_json::{Value, json};

struct Replay {
    http: Http,
    ids: IdMap,
    failures: Vec<String>,
}

impl Replay {
    /// Send the golden request (RVs/UIDs rewritten) and return the response.
    async fn send(&mut self, g: &Value) -> common::Resp {
        let req = &g["request"];
        let method = req["method"].as_str().unwrap();
        let pq = self
            .ids
            .rewrite_query(req["path_and_query"].as_str().unwrap());
        let headers: Vec<(String, String)> = req["extra_headers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|h| {
                h.as_str()?
                    .split_once(": ")
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect();
        let body = match &req["body"] {
            Value::Null => Bytes::new(),
            Value::String(s) => Bytes::from(s.clone()),
            other => {
                let mut b = other.clone();
                self.ids.rewrite(&mut b);
                Bytes::from(b.to_string())
            }
        };
        self.http
            .send(method, &pq, req["content_type"].as_str(), &headers, body)
            .await
    }

    /// Replay one golden file and check it; `extra_ignore` adds paths kube-sim legitimately differs on.
    async fn check(&mut self, name: &str, extra_ignore: &[&str]) -> Value {
        let g = load_golden(name);
        let resp = self.send(&g).await;
        self.check_response(name, &g, &resp, extra_ignore);
        resp.json()
    }

    fn check_response(
        &mut self,
        name: &str,
        g: &Value,
        resp: &common::Resp,
        extra_ignore: &[&str],
    ) {
        let want = &g["response"];
        let status = want["status"].as_u64().unwrap() as u16;
        if resp.status != status {
            self.failures.push(format!(
                "{name}: status {}, expected {status}; body {}",
                resp.status,
                String::from_utf8_lossy(&resp.body)
            ));
            return;
        }
        let ctype = resp.header("content-type").unwrap_or_default();
        if want["content_type"].as_str() != Some(ctype.as_str()) {
            self.failures.push(format!(
                "{name}: content-type {ctype:?}, expected {}",
                want["content_type"]
            ));
        }
        for h in ["warning", "retry-after"] {
            let expected = want["headers"][h].as_str().map(String::from);
            if resp.header(h) != expected {
                self.failures.push(format!(
                    "{name}: header {h} {:?}, expected {expected:?}",
                    resp.header(h)
                ));
            }
        }
        let mut ignore = volatile_paths(g, false);
        ignore.extend(extra_ignore.iter().map(|p| split_path(p)));
        let mut expected = want["body"].clone();
        let actual = resp.json();
        self.ids.learn(&expected, &actual);
        self.ids.rewrite(&mut expected);
        for d in compare(&expected, &actual, &ignore) {
            self.failures.push(format!("{name}: {d}"));
        }
    }

    /// Compare a watch's events with the golden ones (types and objects, volatile paths ignored).
    fn check_events(&mut self, name: &str, g: &Value, events: &[Value], extra_ignore: &[&str]) {
        let want = g["response"]["events"].as_array().unwrap();
        let types = |v: &[Value]| {
            v.iter()
                .map(|e| e["type"].as_str().unwrap_or_default().to_string())
                .collect::<Vec<_>>()
        };
        if types(want) != types(events) {
            self.failures.push(format!(
                "{name}: event types {:?}, expected {:?}",
                types(events),
                types(want)
            ));
            return;
        }
        let mut ignore: Vec<Vec<String>> = volatile_paths(g, true)
            .into_iter()
            .map(|p| {
                p.into_iter()
                    .skip_while(|s| s != "object")
                    .skip(1)
                    .collect()
            })
            .collect();
        ignore.push(split_path("metadata.resourceVersion"));
        ignore.extend(extra_ignore.iter().map(|p| split_path(p)));
        for (i, (w, a)) in want.iter().zip(events).enumerate() {
            let mut expected = w["object"].clone();
            self.ids.rewrite(&mut expected);
            for d in compare(&expected, &a["object"], &ignore) {
                self.failures.push(format!("{name}: event {i}: {d}"));
            }
        }
    }
}

const IGNORE_DISCOVERY: &[&str] = &[];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_files_replay_against_kube_sim() {
    let sim = KubeSim::start(SimOptions {
        kubelet: false,
        ..Default::default()
    })
    .await
    .unwrap();
    let mut r = Replay {
        http: Http::new(&sim.url()),
        ids: IdMap::default(),
        failures: Vec::new(),
    };

    discovery(&mut r).await;
    nodes(&mut r).await;
    lists_and_watches(&mut r, &sim).await;
    pods_and_eviction(&mut r).await;
    custom_resources(&mut r).await;
    events_and_tables(&mut r).await;

    assert!(
        r.failures.is_empty(),
        "{} differences from the golden files:\n{}",
        r.failures.len(),
        r.failures.join("\n")
    );
}

async fn discovery(r: &mut Replay) {
    r.check("01-discovery-api", &["serverAddressByClientCIDRs"])
        .await;
    r.check("01-discovery-apis-policy", IGNORE_DISCOVERY).await;
    r.check("01-discovery-policy-v1", IGNORE_DISCOVERY).await;
    r.check("01-discovery-apis-machineconfiguration", IGNORE_DISCOVERY)
        .await;
    // Golden lists are trimmed or predate the MachineConfigPool CRD: compare the entries they have.
    for (name, key) in [
        ("01-discovery-api-v1", "resources"),
        ("01-discovery-machineconfiguration-v1", "resources"),
    ] {
        let g = load_golden(name);
        let resp = r.send(&g).await;
        let actual = resp.json();
        for want in g["response"]["body"][key].as_array().unwrap() {
            let wname = want["name"].as_str().unwrap();
            let served = matches!(
                wname,
                "events"
                    | "namespaces"
                    | "namespaces/status"
                    | "nodes"
                    | "nodes/status"
                    | "pods"
                    | "pods/eviction"
                    | "pods/status"
                    | "machineconfigs"
                    | "machineconfignodes"
                    | "machineconfignodes/status"
            );
            if !served {
                continue;
            }
            match actual[key]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["name"] == want["name"])
            {
                Some(a) => {
                    for d in compare(want, a, &[]) {
                        r.failures.push(format!("{name}: {wname}: {d}"));
                    }
                }
                None => r.failures.push(format!("{name}: resource {wname} missing")),
            }
        }
        if g["response"]["body"]["kind"] != actual["kind"]
            || g["response"]["body"].get("apiVersion") != actual.get("apiVersion")
        {
            r.failures
                .push(format!("{name}: list header differs: {actual}"));
        }
    }
    // Legacy group list: every group kube-sim serves appears exactly as the real server lists it.
    let g = load_golden("01-discovery-apis");
    let actual = r.send(&g).await.json();
    for group in actual["groups"].as_array().unwrap() {
        let real = g["response"]["body"]["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == group["name"]);
        let ours_only = group["name"].as_str().unwrap().ends_with("openshift.io");
        match real {
            Some(real) => r.failures.extend(
                compare(real, group, &[])
                    .into_iter()
                    .map(|d| format!("01-discovery-apis: {d}")),
            ),
            None if ours_only => {}
            None => r.failures.push(format!(
                "01-discovery-apis: unexpected group {}",
                group["name"]
            )),
        }
    }
    // Aggregated discovery (trimmed to policy in the recording).
    let g = load_golden("01-discovery-apis-aggregated");
    let resp = r.send(&g).await;
    if resp.header("content-type").as_deref() != g["response"]["content_type"].as_str() {
        r.failures.push(format!(
            "aggregated: content-type {:?}",
            resp.header("content-type")
        ));
    }
    let actual = resp.json();
    let policy = actual["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["metadata"]["name"] == "policy")
        .cloned();
    let want = &g["response"]["body"]["items"][0];
    match policy {
        Some(p) => r.failures.extend(
            compare(want, &p, &[])
                .into_iter()
                .map(|d| format!("aggregated policy: {d}")),
        ),
        None => r.failures.push("aggregated: no policy group".into()),
    }
    let v = r
        .check(
            "01-discovery-version",
            &[
                "gitVersion",
                "gitCommit",
                "buildDate",
                "goVersion",
                "platform",
            ],
        )
        .await;
    assert_eq!(
        (v["major"].as_str(), v["minor"].as_str()),
        (Some("1"), Some("32"))
    );
}

async fn nodes(r: &mut Replay) {
    for name in [
        "02-node-create",
        "02-node-create-duplicate",
        "02-node-create-invalid-name",
        "02-node-create-kind-mismatch",
        "02-node-get",
        "02-node-get-missing",
        "02-node-list-fieldselector",
        "02-node-list-fieldselector-nomatch",
        "02-node-patch-merge-annotations",
        "02-node-patch-merge-null-deletes",
        "02-node-patch-merge-null-deletes-2",
        "02-node-patch-strategic-cordon",
        "02-node-patch-jsonpatch-annotation",
        "02-node-patch-jsonpatch-missing-path",
        "02-node-put-current-rv",
        "02-node-put-no-rv",
        "02-node-put-stale-rv",
        "02-node-patch-status-subresource",
        "02-node-get-after",
        "02-node-patch-merge-stale-rv",
        "02-node-patch-missing",
        "02-node-patch-bad-content-type",
        "02-node-patch-text-plain",
        "02-node-patch-invalid-json",
        "02-node-patch-jsonpatch-test-fails",
    ] {
        r.check(name, &[]).await;
    }
}

async fn lists_and_watches(r: &mut Replay, sim: &KubeSim) {
    // A watch from the node's RV sees exactly the two writes made while it is open, then a
    // BOOKMARK, then a clean close at timeoutSeconds (shortened from 5 s to 3 s).
    let g = load_golden("03-watch-node-from-rv");
    let pq = r
        .ids
        .rewrite_query(g["request"]["path_and_query"].as_str().unwrap())
        .replace("timeoutSeconds=5", "timeoutSeconds=3");
    let writer = {
        let http = Http::new(&r.http.base);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let s = http.json("PATCH", "/api/v1/nodes/node1", "application/merge-patch+json",
                &json!({"metadata": {"annotations": {"machineconfiguration.openshift.io/state": "Working"}}})).await;
            assert_eq!(s.status, 200);
            tokio::time::sleep(Duration::from_millis(300)).await;
            let s = http
                .json(
                    "PATCH",
                    "/api/v1/nodes/node1",
                    "application/strategic-merge-patch+json",
                    &json!({"spec": {"unschedulable": null}}),
                )
                .await;
            assert_eq!(s.status, 200);
        })
    };
    let (status, events, took) = r.http.watch(&pq, Duration::from_secs(10)).await;
    writer.await.unwrap();
    assert_eq!(status, 200);
    r.check_events("03-watch-node-from-rv", &g, &events, &[]);
    if !(Duration::from_millis(2900)..Duration::from_millis(4000)).contains(&took) {
        r.failures.push(format!(
            "03-watch-node-from-rv: stream closed after {took:?}, expected at the 3 s timeout"
        ));
    }
    // From an RV before the node existed: the whole history replays (ADDED, then each MODIFIED).
    let g = load_golden("03-watch-rv2-fresh-server-cache-window");
    let pq = g["request"]["path_and_query"]
        .as_str()
        .unwrap()
        .replace("timeoutSeconds=5", "timeoutSeconds=3");
    let (_, events, _) = r.http.watch(&pq, Duration::from_secs(10)).await;
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    let want: Vec<&str> = g["response"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    // The recording got two bookmarks in 5 s; a 3 s watch gets one.
    if types[..types.len() - 1] != want[..want.len() - 2] || types.last() != Some(&"BOOKMARK") {
        r.failures.push(format!(
            "03-watch-rv2: event types {types:?}, expected {want:?}"
        ));
    } else {
        let ann = |e: &Value| e["object"]["metadata"]["annotations"].clone();
        for (i, (w, a)) in g["response"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .zip(&events)
            .take(types.len() - 1)
            .enumerate()
        {
            if ann(w) != ann(a)
                || w["object"]["spec"]["unschedulable"] != a["object"]["spec"]["unschedulable"]
            {
                r.failures.push(format!(
                    "03-watch-rv2: event {i} differs: {} vs {}",
                    ann(a),
                    ann(w)
                ));
            }
        }
    }
    for name in [
        "03-watch-node-no-rv",
        "03-watch-node-rv0",
        "03-watch-node-sendinitialevents",
    ] {
        let g = load_golden(name);
        let pq = g["request"]["path_and_query"]
            .as_str()
            .unwrap()
            .replace("timeoutSeconds=3", "timeoutSeconds=1");
        let (status, events, _) = r.http.watch(&pq, Duration::from_secs(5)).await;
        assert_eq!(status, 200, "{name}");
        r.check_events(name, &g, &events, &[]);
    }
    for name in [
        "03-list-nodes-no-rv",
        "03-list-nodes-rv0",
        "03-list-namespaces-limit1",
        "03-list-namespaces-continue",
        "03-list-namespaces-limit1-rv0",
        "03-list-continue-garbage",
        "03-list-rvmatch-without-rv",
        "03-list-notolderthan-old-rv",
    ] {
        r.check(name, &[]).await;
    }
    // A watch from a future RV waits silently until its timeout (10 s shortened to 1 s).
    let g = load_golden("03-watch-future-rv");
    let pq = g["request"]["path_and_query"]
        .as_str()
        .unwrap()
        .replace("timeoutSeconds=10", "timeoutSeconds=1");
    let (status, events, took) = r.http.watch(&pq, Duration::from_secs(5)).await;
    if status != 200 || !events.is_empty() || took < Duration::from_millis(900) {
        r.failures.push(format!(
            "03-watch-future-rv: {status} {events:?} after {took:?}"
        ));
    }
    // Past the history window: 410 for Exact lists and stale continue tokens, an ERROR event for watches.
    let first_page = r.http.get("/api/v1/namespaces?limit=1").await.json();
    let token = first_page["metadata"]["continue"]
        .as_str()
        .unwrap()
        .to_string();
    // A write after the token was issued, then the compaction: the token's RV is now gone.
    let bump = r
        .http
        .json(
            "PATCH",
            "/api/v1/nodes/node1",
            "application/merge-patch+json",
            &json!({"metadata": {"labels": {"bump": "1"}}}),
        )
        .await;
    assert_eq!(bump.status, 200);
    r.http
        .json(
            "PATCH",
            "/api/v1/nodes/node1",
            "application/merge-patch+json",
            &json!({"metadata": {"labels": {"bump": null}}}),
        )
        .await;
    sim.compact();
    r.check("03-list-exact-compacted-rv-410", &[]).await;
    let g = load_golden("03-list-continue-after-compaction-410");
    let resp = r
        .http
        .get(&format!("/api/v1/namespaces?limit=1&continue={token}"))
        .await;
    r.check_response("03-list-continue-after-compaction-410", &g, &resp, &[]);
    let fresh = resp.json()["metadata"]["continue"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let rest = r
        .http
        .get(&format!("/api/v1/namespaces?limit=10&continue={fresh}"))
        .await
        .json();
    if rest["items"].as_array().map(Vec::len) != Some(3) {
        r.failures.push(format!(
            "continuing with the fresh token after 410 should list the other 3 namespaces: {rest}"
        ));
    }
    for name in ["03-watch-too-old-rv-410", "03-watch-very-old-rv2-410"] {
        let g = load_golden(name);
        let pq = r
            .ids
            .rewrite_query(g["request"]["path_and_query"].as_str().unwrap());
        let (status, events, took) = r.http.watch(&pq, Duration::from_secs(5)).await;
        assert_eq!(status, 200, "{name}");
        r.check_events(name, &g, &events, &[]);
        if took > Duration::from_secs(1) {
            r.failures.push(format!(
                "{name}: the stream should close right after the ERROR, took {took:?}"
            ));
        }
    }
}

async fn pods_and_eviction(r: &mut Replay) {
    r.check("04-namespace-create", &[]).await;
    r.check("04-daemonset-create", &["metadata.managedFields"])
        .await;
    let web1 = load_golden("04-pod-create-web-1");
    r.check(
        "04-pod-create-web-1",
        &[
            "metadata.managedFields",
            "spec.volumes.*.name",
            "spec.containers.*.volumeMounts.*.name",
        ],
    )
    .await;
    for n in ["web-2", "web-3"] {
        let mut body = web1["request"]["body"].clone();
        body["metadata"]["name"] = json!(n);
        assert_eq!(
            r.http
                .json(
                    "POST",
                    "/api/v1/namespaces/apps/pods",
                    "application/json",
                    &body
                )
                .await
                .status,
            201
        );
    }
    r.check(
        "04-pod-create-daemonset-owned",
        &[
            "metadata.managedFields",
            "spec.volumes.*.name",
            "spec.containers.*.volumeMounts.*.name",
        ],
    )
    .await;
    r.check("04-pod-create-mirror", &["metadata.managedFields"])
        .await;
    r.check("04-pdb-create", &["metadata.managedFields"]).await;
    r.check("04-pdb-status-before-ready", &["metadata.managedFields"])
        .await;
    let ready = load_golden("04-pod-status-patch-ready");
    r.check(
        "04-pod-status-patch-ready",
        &[
            "metadata.managedFields",
            "spec.volumes.*.name",
            "spec.containers.*.volumeMounts.*.name",
        ],
    )
    .await;
    let web1_rv = r
        .http
        .get("/api/v1/namespaces/apps/pods/web-1")
        .await
        .json()["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    for n in ["web-2", "web-3"] {
        let resp = r
            .http
            .json(
                "PATCH",
                &format!("/api/v1/namespaces/apps/pods/{n}/status"),
                "application/merge-patch+json",
                &ready["request"]["body"],
            )
            .await;
        assert_eq!(resp.status, 200);
    }
    r.check("04-pdb-status-after-ready", &["metadata.managedFields"])
        .await;
    r.check(
        "04-pod-patch-status-via-main-resource",
        &[
            "metadata.managedFields",
            "spec.volumes.*.name",
            "spec.containers.*.volumeMounts.*.name",
            "metadata.uid",
        ],
    )
    .await;
    // Watch web-1 through eviction, kubelet-style final delete and re-creation.
    let watch_pq = format!(
        "/api/v1/namespaces/apps/pods?watch=1&fieldSelector=metadata.name%3Dweb-1&resourceVersion={web1_rv}&allowWatchBookmarks=true&timeoutSeconds=4"
    );
    let watcher = {
        let http = Http::new(&r.http.base);
        tokio::spawn(async move { http.watch(&watch_pq, Duration::from_secs(10)).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    for name in [
        "04-eviction-dryrun-web-2",
        "04-eviction-web-1-first",
        "04-pdb-after-first-eviction",
    ] {
        r.check(name, &["metadata.managedFields"]).await;
    }
    r.check(
        "04-pod-web-1-after-eviction",
        &[
            "metadata.managedFields",
            "spec.volumes.*.name",
            "spec.containers.*.volumeMounts.*.name",
        ],
    )
    .await;
    for name in [
        "04-eviction-web-2-blocked-429",
        "04-eviction-dryrun-web-2-blocked",
        "04-eviction-v1beta1-body",
        "04-eviction-web-1-again-terminating",
        "04-eviction-name-mismatch",
        "04-eviction-missing-pod-404",
        "04-eviction-daemonset-pod-not-covered",
        "04-eviction-with-deleteoptions",
        "04-pod-delete-wrong-uid-precondition",
    ] {
        r.check(name, &[]).await;
    }
    r.check(
        "04-pod-delete-kubelet-final",
        &[
            "metadata.managedFields",
            "spec.volumes.*.name",
            "spec.containers.*.volumeMounts.*.name",
        ],
    )
    .await;
    r.check("04-pod-get-after-final-delete", &[]).await;
    let old_uid = r
        .ids
        .uid
        .get("8bd7b511-efde-4faf-aa95-7d14f6098fb7")
        .cloned();
    let created = r
        .check(
            "04-pod-recreate-same-name",
            &[
                "metadata.managedFields",
                "spec.volumes.*.name",
                "spec.containers.*.volumeMounts.*.name",
            ],
        )
        .await;
    if created["metadata"]["uid"].as_str() == old_uid.as_deref() {
        r.failures
            .push("04-pod-recreate-same-name: the new pod reused the old uid".into());
    }
    let (_, events, _) = watcher.await.unwrap();
    let g = load_golden("04-watch-pod-web-1-eviction-lifecycle");
    r.check_events(
        "04-watch-pod-web-1-eviction-lifecycle",
        &g,
        &events,
        &[
            "metadata.managedFields",
            "spec.volumes.*.name",
            "spec.containers.*.volumeMounts.*.name",
            "metadata.uid",
        ],
    );
}

async fn custom_resources(r: &mut Replay) {
    for name in [
        "05-mc-create",
        "05-mc-get",
        "05-mc-list",
        "05-mc-create-unknown-field",
        "05-mc-create-unknown-field-strict",
        "05-mc-create-malformed-spec-string",
        "05-mc-create-malformed-kargs",
        "05-mc-get-missing",
        "05-mc-patch-merge",
        "05-mc-patch-strategic-unsupported",
        "05-mcn-create",
        "05-mcn-create-cel-violation",
        "05-mcn-status-ssa",
        "05-mcn-get",
        "05-mcn-status-ssa-invalid",
        "05-mcn-status-ssa-no-fieldmanager",
    ] {
        r.check(name, &[]).await;
    }
}

async fn events_and_tables(r: &mut Replay) {
    for name in [
        "06-event-core-v1-create",
        "06-event-core-v1-namespace-mismatch",
        "06-event-core-v1-read-via-events-api",
        "06-event-events-k8s-io-v1-create",
        "06-event-events-k8s-io-v1-missing-eventtime",
        "06-event-list-fieldselector",
    ] {
        r.check(name, &[]).await;
    }
    // The recording was taken after kubectl annotate (state=Done) and cordon.
    let http = &r.http;
    http.json(
        "PATCH",
        "/api/v1/nodes/node1",
        "application/merge-patch+json",
        &json!({"metadata": {"annotations": {"machineconfiguration.openshift.io/state": "Done"}}}),
    )
    .await;
    http.json(
        "PATCH",
        "/api/v1/nodes/node1",
        "application/strategic-merge-patch+json",
        &json!({"spec": {"unschedulable": true}}),
    )
    .await;
    r.check(
        "07-get-nodes-as-table",
        &["columnDefinitions.*.description", "rows.*.cells.*"],
    )
    .await;
    let table = r
        .http
        .send(
            "GET",
            "/api/v1/nodes?limit=500",
            None,
            &[(
                "accept".into(),
                "application/json;as=Table;v=v1;g=meta.k8s.io,application/json".into(),
            )],
            Bytes::new(),
        )
        .await
        .json();
    let cells = &table["rows"][0]["cells"];
    let want = &load_golden("07-get-nodes-as-table")["response"]["body"]["rows"][0]["cells"];
    for i in [0usize, 1, 2, 4, 5, 6, 7, 8, 9] {
        if cells[i] != want[i] {
            r.failures.push(format!(
                "07-get-nodes-as-table: cell {i} {} expected {}",
                cells[i], want[i]
            ));
        }
    }
}
