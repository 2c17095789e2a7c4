//! The object store: one global resourceVersion, objects per storage, and a bounded history of
//! watch events (the "watch cache window"; a watch from an RV older than the window gets 410).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use serde_json::{Map, Value, json};
use tokio::sync::broadcast;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

/// One change, as a watcher sees it. `prev` lets a watch with a selector turn a change that makes
/// an object stop (start) matching into DELETED (ADDED), as the real watch cache does.
#[derive(Debug)]
pub struct WatchEvent {
    pub rv: u64,
    pub storage: String,
    pub etype: EventType,
    pub object: Value,
    pub prev: Option<Value>,
}

#[derive(Debug)]
pub struct State {
    pub rv: u64,
    pub objects: BTreeMap<String, BTreeMap<String, Value>>,
    pub history: VecDeque<Arc<WatchEvent>>,
    pub history_limit: usize,
    /// Watches (and Exact lists) from an RV below this are answered with 410 Expired.
    pub window_start: u64,
    /// When the simulated kubelet finishes terminating a pod: key = storage key + uid.
    pub pod_deadlines: HashMap<(String, String), Instant>,
    pub events_tx: broadcast::Sender<Arc<WatchEvent>>,
}

pub fn object_key(namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) if !ns.is_empty() => format!("{ns}/{name}"),
        _ => name.to_string(),
    }
}

pub fn key_of(obj: &Value) -> String {
    object_key(
        obj["metadata"]["namespace"].as_str(),
        obj["metadata"]["name"].as_str().unwrap_or_default(),
    )
}

pub fn now_rfc3339() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

pub fn rfc3339_after(secs: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::seconds(secs))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

pub fn parse_time(s: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}

impl State {
    pub fn new(history_limit: usize) -> Self {
        let (events_tx, _) = broadcast::channel(16384);
        State {
            rv: 0,
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            history_limit,
            window_start: 0,
            pod_deadlines: HashMap::new(),
            events_tx,
        }
    }

    pub fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    pub fn get(&self, storage: &str, key: &str) -> Option<&Value> {
        self.objects.get(storage).and_then(|m| m.get(key))
    }

    pub fn list(&self, storage: &str) -> impl Iterator<Item = (&String, &Value)> {
        self.objects.get(storage).into_iter().flat_map(|m| m.iter())
    }

    fn set_rv(obj: &mut Value, rv: u64) {
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("resourceVersion".into(), json!(rv.to_string()));
        }
    }

    fn emit(&mut self, storage: &str, etype: EventType, object: Value, prev: Option<Value>) {
        let ev = Arc::new(WatchEvent {
            rv: self.rv,
            storage: storage.to_string(),
            etype,
            object,
            prev,
        });
        self.history.push_back(ev.clone());
        while self.history.len() > self.history_limit {
            if let Some(old) = self.history.pop_front() {
                self.window_start = old.rv;
            }
        }
        // No receivers is fine: nobody is watching.
        let _ = self.events_tx.send(ev);
    }

    /// Store a new object (its metadata already complete apart from the RV). Returns the stored copy.
    pub fn insert(&mut self, storage: &str, mut obj: Value) -> Value {
        let rv = self.next_rv();
        Self::set_rv(&mut obj, rv);
        let key = key_of(&obj);
        self.objects
            .entry(storage.to_string())
            .or_default()
            .insert(key, obj.clone());
        self.emit(storage, EventType::Added, obj.clone(), None);
        obj
    }

    /// Replace an existing object; bumps the RV and emits MODIFIED.
    pub fn replace(&mut self, storage: &str, mut obj: Value) -> Value {
        let rv = self.next_rv();
        Self::set_rv(&mut obj, rv);
        let key = key_of(&obj);
        let prev = self
            .objects
            .entry(storage.to_string())
            .or_default()
            .insert(key, obj.clone());
        self.emit(storage, EventType::Modified, obj.clone(), prev);
        obj
    }

    /// Remove an object; the DELETED event (and the returned copy) carry a fresh RV.
    pub fn remove(&mut self, storage: &str, key: &str) -> Option<Value> {
        let mut obj = self.objects.get_mut(storage)?.remove(key)?;
        let rv = self.next_rv();
        Self::set_rv(&mut obj, rv);
        self.emit(storage, EventType::Deleted, obj.clone(), None);
        Some(obj)
    }

    /// Forget all history: the next watch from any RV below the current one gets 410.
    pub fn compact(&mut self) {
        self.history.clear();
        self.window_start = self.rv;
    }

    /// The objects of one storage as they were at `rv`, rebuilt by undoing later events.
    /// `None` when that RV is older than the history window.
    pub fn snapshot_at(&self, storage: &str, rv: u64) -> Option<BTreeMap<String, Value>> {
        if rv < self.window_start {
            return None;
        }
        let mut objs: BTreeMap<String, Value> =
            self.objects.get(storage).cloned().unwrap_or_default();
        for ev in self.history.iter().rev() {
            if ev.rv <= rv {
                break;
            }
            if ev.storage != storage {
                continue;
            }
            let key = key_of(&ev.object);
            match ev.etype {
                EventType::Added => {
                    objs.remove(&key);
                }
                EventType::Modified => {
                    if let Some(p) = &ev.prev {
                        objs.insert(key, p.clone());
                    }
                }
                EventType::Deleted => {
                    // The stored copy before deletion: same object with its last RV, which we
                    // cannot recover exactly; the deleted copy is close enough for a list.
                    objs.insert(key, ev.object.clone());
                }
            }
        }
        Some(objs)
    }
}

/// Sort every JSON object's keys (custom resources are served with sorted keys).
pub fn sort_keys(v: &mut Value) {
    match v {
        Value::Object(m) => {
            let mut entries: Vec<(String, Value)> = std::mem::take(m).into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            for (k, mut val) in entries {
                sort_keys(&mut val);
                m.insert(k, val);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(sort_keys),
        _ => {}
    }
}

const META_ORDER: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
];

/// Put a built-in object's keys in the order the Go structs serialise them.
pub fn order_builtin(v: &mut Value) {
    let Some(m) = v.as_object_mut() else { return };
    let mut out = Map::new();
    for k in ["kind", "apiVersion", "metadata"] {
        if let Some(x) = m.shift_remove(k) {
            out.insert(k.to_string(), x);
        }
    }
    for (k, x) in std::mem::take(m) {
        out.insert(k, x);
    }
    if let Some(meta) = out.get_mut("metadata").and_then(Value::as_object_mut) {
        let mut ordered = Map::new();
        for k in META_ORDER {
            if let Some(mut x) = meta.shift_remove(*k) {
                if *k == "labels" || *k == "annotations" {
                    sort_keys(&mut x);
                }
                ordered.insert(k.to_string(), x);
            }
        }
        for (k, x) in std::mem::take(meta) {
            ordered.insert(k, x);
        }
        *meta = ordered;
    }
    *m = out;
}
