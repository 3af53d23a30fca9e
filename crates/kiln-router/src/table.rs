//! The routing table: which instances serve which route.
//!
//! Two halves. [`RouteTable`] is what requests read: immutable, shared
//! behind `arc-swap`, a lookup is one hash of the host and one probe.
//! [`RouteIndex`] is the writer's: what each process contributes (its
//! route keys and RUNNING instances), so that a change to one process
//! recomputes only the hosts it maps and makes a new table that shares
//! every other part with the old one (copy-on-write by shard). A full
//! rebuild from the BBS's view is kept for the start and the periodic
//! resync, and reuses the previous table's unchanged endpoints.
//!
//! A route whose processes have no RUNNING instance stays in the table
//! with no endpoints, so the router can tell "no such route" (404) from
//! "no instance up" (503), as Gorouter does.
//!
//! A route is a host plus an optional path prefix. A lookup hashes the
//! normalised host once (no allocation), picks the shard by that hash
//! (the group of shards is small enough to stay in cache), and probes the
//! shard's open-addressing slots with it. A slot is the host itself: its
//! hash and, for hosts up to [`INLINE_HOST`] bytes, its name, then its own
//! route, in one aligned 128-byte block; so a hit reads that block and
//! nothing else of the table, whatever its size (one cache miss where the
//! table is larger than the cache). Path routes are a short list in that
//! slot, longest first.

use http::uri::Authority;
use kiln_model::ActualLrpState;
use kiln_model::bbs::{ActualLrp, DesiredLrp, HttpRoute};
use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// One DesiredLrp's route keys: (host, path).
type RouteKeys = Vec<(Box<str>, String)>;

/// One RUNNING instance the router may send a request to (Gorouter's
/// endpoint, as the route emitter registers it).
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `address:host_port` of the instance (IPv6 addresses in brackets).
    pub addr: String,
    /// The DesiredLrp's `log_guid`, which is the app guid (Gorouter's `app`).
    pub app_guid: String,
    pub process_guid: String,
    pub index: u32,
    pub instance_guid: String,
    /// Made once per table, sent with every request to this instance.
    pub(crate) wire: WireHeaders,
    /// Made once per table, written in every access line of this instance.
    pub(crate) log_text: crate::access_log::EndpointText,
    /// Kept across table rebuilds for the same address and instance.
    pub(crate) state: Arc<EndpointState>,
}

/// What the router remembers about an instance between requests: when it
/// last failed to dial, and how many requests it has in flight.
#[derive(Debug, Default)]
pub(crate) struct EndpointState {
    /// Milliseconds on [`clock_ms`] until which the endpoint is skipped.
    failed_until_ms: AtomicU64,
    in_flight: AtomicUsize,
}

/// Milliseconds since the router's first use of this clock (monotonic).
pub(crate) fn clock_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

impl EndpointState {
    pub fn mark_failed(&self, skip: Duration) {
        self.failed_until_ms
            .store(clock_ms() + skip.as_millis() as u64, Ordering::Relaxed);
    }

    /// A dial failed less than the skip time ago. Reads the clock only
    /// for an endpoint that ever failed.
    pub fn recently_failed(&self) -> bool {
        let until = self.failed_until_ms.load(Ordering::Relaxed);
        until != 0 && until > clock_ms()
    }

    /// Whether `limit` requests are in flight already (0: no limit).
    pub fn at_limit(&self, limit: usize) -> bool {
        limit != 0 && self.in_flight.load(Ordering::Relaxed) >= limit
    }

    /// Counts a request in flight until the guard is dropped, if there is
    /// a `limit` to count against (0: none). Without one nothing is
    /// counted: the counter is shared by every worker, and each count
    /// would move its cache line between cores.
    pub fn start_request(&self, limit: usize) -> InFlight<'_> {
        if limit == 0 {
            return InFlight(None);
        }
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(Some(self))
    }
}

/// One request in flight to an endpoint, counted until the guard is
/// dropped or handed over to the response ([`InFlight::hand_over`]).
#[derive(Debug)]
pub(crate) struct InFlight<'a>(Option<&'a EndpointState>);

impl InFlight<'_> {
    /// The count goes on with the response, which holds the endpoint
    /// anyway: no reference count of the endpoint's state is taken for it
    /// (that count, like the in-flight one, is shared by every worker).
    pub fn hand_over(self) -> Counted {
        let counted = Counted(self.0.is_some());
        std::mem::forget(self);
        counted
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Some(state) = self.0 {
            state.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// A request's in-flight count held by its response; [`Counted::end`]
/// with the same endpoint's state ends it.
#[derive(Debug)]
#[must_use]
pub(crate) struct Counted(bool);

impl Counted {
    pub fn end(self, state: &EndpointState) {
        if self.0 {
            state.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// What the proxy puts on the wire for an endpoint, ready-made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WireHeaders {
    /// `None` if `addr` is not a valid authority (then every request fails).
    pub authority: Option<Authority>,
    /// `X-Cf-ApplicationID`, `X-Cf-InstanceID` and `X-Cf-InstanceIndex`
    /// as header lines, written once per instance instead of per request.
    pub lines: Box<[u8]>,
}

impl Endpoint {
    pub fn new(
        addr: String,
        app_guid: String,
        process_guid: String,
        index: u32,
        instance_guid: String,
    ) -> Endpoint {
        let wire = WireHeaders {
            authority: Authority::try_from(addr.as_str()).ok(),
            lines: crate::proxy::instance_lines(&app_guid, &instance_guid, index),
        };
        let log_text =
            crate::access_log::EndpointText::new(&addr, &app_guid, index, &instance_guid);
        Endpoint {
            addr,
            app_guid,
            process_guid,
            index,
            instance_guid,
            wire,
            log_text,
            state: Arc::default(),
        }
    }
}

/// The endpoints of one route, with the round-robin position. Endpoints are
/// shared (`Arc`) so a request can keep the one it uses without copying it,
/// and a rebuild reuses the ones that did not change.
#[derive(Debug)]
pub struct Pool {
    pub endpoints: Vec<Arc<Endpoint>>,
    next: AtomicUsize,
}

impl Clone for Pool {
    fn clone(&self) -> Pool {
        Pool {
            endpoints: self.endpoints.clone(),
            next: AtomicUsize::new(self.next.load(Ordering::Relaxed)),
        }
    }
}

impl Pool {
    fn starting_at(next: usize) -> Pool {
        Pool {
            endpoints: Vec::new(),
            next: AtomicUsize::new(next),
        }
    }

    /// The endpoints in the order to try them for one request: the next one
    /// round-robin first, then the others in turn, each once.
    pub fn attempt_order(&self) -> impl Iterator<Item = &Arc<Endpoint>> {
        let n = self.endpoints.len();
        // The counter is shared by every worker: not touched when there is
        // nothing to choose between.
        let start = if n <= 1 {
            0
        } else {
            self.next.fetch_add(1, Ordering::Relaxed) % n
        };
        (0..n).map(move |i| &self.endpoints[(start + i) % n])
    }
}

/// The routes of one host. Most hosts have only their own route, kept
/// inline in the table's slot (no pointer to follow on a lookup); path
/// routes, if any, are a short list, longest prefix first.
#[derive(Debug, Default, Clone)]
struct HostRoutes {
    /// The host's own route (empty path), if mapped.
    root: Option<Pool>,
    /// `(path prefix, pool)`, longest first.
    paths: Vec<(Box<str>, Pool)>,
}

impl HostRoutes {
    fn pool(&self, path: &str) -> Option<&Pool> {
        if path.is_empty() {
            return self.root.as_ref();
        }
        self.paths
            .iter()
            .find(|(p, _)| &**p == path)
            .map(|(_, pool)| pool)
    }

    /// The pool at `path`, added (starting round-robin at `next()`) if
    /// it is not there yet.
    fn pool_or_add(&mut self, path: &str, next: impl FnOnce() -> usize) -> &mut Pool {
        if path.is_empty() {
            return self.root.get_or_insert_with(|| Pool::starting_at(next()));
        }
        let at = match self.paths.iter().position(|(p, _)| &**p == path) {
            Some(at) => at,
            None => {
                self.paths.push((path.into(), Pool::starting_at(next())));
                self.paths.len() - 1
            }
        };
        &mut self.paths[at].1
    }

    /// How many routes (the host's own and its paths) this is.
    fn len(&self) -> usize {
        usize::from(self.root.is_some()) + self.paths.len()
    }

    /// Gorouter's rule: the longest matching prefix that has endpoints;
    /// if none has any, the longest match (which then answers 503).
    fn lookup(&self, request_path: &str) -> Option<&Pool> {
        let mut empty_match = None;
        for (prefix, pool) in &self.paths {
            if !path_has_prefix(request_path, prefix) {
                continue;
            }
            if !pool.endpoints.is_empty() {
                return Some(pool);
            }
            empty_match.get_or_insert(pool);
        }
        match &self.root {
            Some(root) if !root.endpoints.is_empty() || empty_match.is_none() => Some(root),
            _ => empty_match,
        }
    }

    fn pools(&self) -> impl Iterator<Item = &Pool> {
        self.root
            .iter()
            .chain(self.paths.iter().map(|(_, pool)| pool))
    }

    /// Orders what lookups and round-robin rely on.
    fn settle(&mut self) {
        // Longest first, so the first match is the longest prefix.
        self.paths
            .sort_by_key(|(path, _)| std::cmp::Reverse(path.len()));
        self.paths.shrink_to_fit();
        // A stable order, so round-robin walks the instances the same way
        // whatever order the BBS listed them in.
        for pool in self
            .root
            .iter_mut()
            .chain(self.paths.iter_mut().map(|(_, p)| p))
        {
            pool.endpoints.sort_unstable_by(|a, b| {
                (&a.process_guid, a.index).cmp(&(&b.process_guid, b.index))
            });
            pool.endpoints.shrink_to_fit();
        }
    }
}

/// Whether `prefix` (lower case, no trailing `/`, not empty) is a
/// whole-segment prefix of the request's path: `/a` matches `/a`, `/a/`,
/// `/a/b` and `/a?q`, not `/ab`. Compared without regard to case, as
/// Gorouter lower-cases its key.
fn path_has_prefix(request_path: &str, prefix: &str) -> bool {
    let (path, rest) = match request_path.get(..prefix.len()) {
        Some(head) => (head, &request_path[prefix.len()..]),
        None => return false,
    };
    path.eq_ignore_ascii_case(prefix)
        && (rest.is_empty() || rest.starts_with('/') || rest.starts_with('?'))
}

/// A route's path as the table keeps it: lower case, no trailing `/`
/// (so `/` is the host's own route).
fn normalize_path(path: &str) -> String {
    path.trim().trim_end_matches('/').to_ascii_lowercase()
}

/// Host names up to this many bytes are kept in the table's slot itself, so
/// comparing one on a lookup follows no pointer. App routes on a shared
/// domain (`my-app-name.apps.example.com`) fit.
pub const INLINE_HOST: usize = 46;

/// A normalised host name as a slot keeps it.
#[derive(Debug, Clone)]
enum HostName {
    Inline { len: u8, bytes: [u8; INLINE_HOST] },
    Heap(Box<[u8]>),
}

impl HostName {
    fn new(name: &[u8]) -> HostName {
        if name.len() <= INLINE_HOST {
            let mut bytes = [0; INLINE_HOST];
            bytes[..name.len()].copy_from_slice(name);
            HostName::Inline {
                len: name.len() as u8,
                bytes,
            }
        } else {
            HostName::Heap(name.into())
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            HostName::Inline { len, bytes } => &bytes[..usize::from(*len)],
            HostName::Heap(bytes) => bytes,
        }
    }
}

/// One host: its hash (compared before the name), name and routes, in
/// this order (`repr(C)`) so that what a lookup compares comes first.
#[derive(Debug, Clone)]
#[repr(C)]
struct HostEntry {
    hash: u64,
    name: HostName,
    routes: HostRoutes,
}

/// One place in a shard: a host, or nothing. The host is in the slot
/// itself (no pointer to follow once there), and the slot is two cache
/// lines, aligned, so a lookup that lands on it reads one 128-byte block.
#[derive(Debug, Clone, Default)]
#[repr(align(128))]
struct Slot(Option<HostEntry>);

// A slot is one aligned 128-byte block: all a lookup reads of the table.
const _: () = assert!(std::mem::size_of::<Slot>() == 128);

/// Part of the table's hosts, chosen by hash: an open-addressing table
/// (linear probing from the hash's low bits), a power of two long and at
/// most half full, so a hit is mostly the first slot probed and a miss
/// ends at an empty one soon. Immutable: a change makes a new shard, and
/// the new table shares all the others with the old.
type Shard = Arc<[Slot]>;

/// The host named `name` (hashing to `hash`) in `shard`.
fn find_in<'s>(shard: &'s [Slot], hash: u64, name: &[u8]) -> Option<&'s HostEntry> {
    let mask = shard.len() - 1;
    let start = hash as usize;
    // Bounded by the shard's length; a shard always has an empty slot.
    for probe in 0..shard.len() {
        match &shard[start.wrapping_add(probe) & mask].0 {
            None => return None,
            Some(entry) if entry.hash == hash && entry.name.as_bytes() == name => {
                return Some(entry);
            }
            Some(_) => {}
        }
    }
    None
}

/// A shard holding `entries` (distinct hosts).
fn shard_of_entries(entries: Vec<HostEntry>) -> Shard {
    let len = (2 * entries.len()).max(1).next_power_of_two();
    let mask = len - 1;
    let mut slots: Vec<Slot> = (0..len).map(|_| Slot(None)).collect();
    for entry in entries {
        let mut at = entry.hash as usize & mask;
        while slots[at].0.is_some() {
            at = (at + 1) & mask;
        }
        slots[at] = Slot(Some(entry));
    }
    slots.into()
}

/// About this many hosts per shard: a change to one host copies that many.
const HOSTS_PER_SHARD: usize = 32;
/// Shards per group, at most. A change copies the group list and the one
/// group of its shard (not every shard pointer), so its cost does not grow
/// with the table: at 100,000 routes, 64 + 64 pointers instead of 4,096.
const SHARDS_PER_GROUP: usize = 64;

/// Some of the table's shards, shared between tables as a whole until a
/// change to one of them. The group holds each shard's pointer and length
/// itself, so a lookup goes from the group straight to the slot.
type ShardGroup = Arc<[Shard]>;

/// A host's new routes (`None`: the host is gone), for [`RouteTable::set_hosts`].
struct HostChange<'a> {
    hash: u64,
    name: &'a [u8],
    routes: Option<HostRoutes>,
}

/// Route → pool. Immutable once built; the router swaps in a new one on
/// every change, which shares the shards the change did not touch.
///
/// The hash is foldhash's, seeded at random per process (so a client cannot
/// pick colliding hosts ahead of time); every table an index derives from
/// another keeps its seed, so shards can be shared between them.
#[derive(Debug, Clone)]
pub struct RouteTable {
    /// The shards, in groups of [`SHARDS_PER_GROUP`] (fewer if the table
    /// has fewer): shard `i` is `groups[i / per_group][i % per_group]`.
    groups: Box<[ShardGroup]>,
    /// log2 of the shards per group.
    group_shift: u32,
    hasher: foldhash::fast::RandomState,
    routes: usize,
}

impl Default for RouteTable {
    fn default() -> RouteTable {
        RouteTable::with_shards(1, foldhash::fast::RandomState::default())
    }
}

/// Lower-cases a host and strips a `:port` and a trailing dot: routes are
/// matched without them (Gorouter strips the port and lower-cases the key).
/// Borrows when the host is already in that form (the common case).
pub fn normalize_host(host: &str) -> Cow<'_, str> {
    let bare = strip_host(host);
    if bare.bytes().any(|c| c.is_ascii_uppercase()) {
        Cow::Owned(bare.to_ascii_lowercase())
    } else {
        Cow::Borrowed(bare)
    }
}

/// The host without spaces, `:port`, IPv6 brackets and a trailing dot.
pub(crate) fn strip_host(host: &str) -> &str {
    let host = host.trim();
    let without_port = if let Some(rest) = host.strip_prefix('[') {
        // An IPv6 literal, `[::1]:8080`.
        rest.split_once(']').map_or(host, |(addr, _)| addr)
    } else {
        // A `:port` is a run of digits at the end after a colon; scanned
        // by hand, as `rsplit_once` costs a `memrchr` set-up per request.
        let bytes = host.as_bytes();
        let digits = bytes
            .iter()
            .rev()
            .take_while(|c| c.is_ascii_digit())
            .count();
        match bytes.len().checked_sub(digits + 1) {
            Some(colon) if bytes[colon] == b':' => &host[..colon],
            _ => host,
        }
    };
    without_port.trim_end_matches('.')
}

/// Longest host name a lookup lower-cases on the stack (DNS allows 253).
const MAX_HOST: usize = 255;

impl RouteTable {
    fn with_shards(count: usize, hasher: foldhash::fast::RandomState) -> RouteTable {
        let count = count.max(1).next_power_of_two();
        let per_group = count.min(SHARDS_PER_GROUP);
        // Every shard starts as the same empty one, replaced when written.
        let empty = shard_of_entries(Vec::new());
        RouteTable {
            groups: (0..count / per_group)
                .map(|_| (0..per_group).map(|_| empty.clone()).collect())
                .collect(),
            group_shift: per_group.trailing_zeros(),
            hasher,
            routes: 0,
        }
    }

    /// How many shards the table has.
    fn shard_count(&self) -> usize {
        self.groups.len() << self.group_shift
    }

    fn shard(&self, at: usize) -> &[Slot] {
        let mask = (1 << self.group_shift) - 1;
        &self.groups[at >> self.group_shift][at & mask]
    }

    /// The table for this set of LRPs: every route of every DesiredLrp is a
    /// route; its endpoints are the RUNNING ActualLrps of those DesiredLrps
    /// that have a port. Several processes may share a route; their
    /// instances then share its pool.
    pub fn from_lrps(desired: &[DesiredLrp], actual: &[ActualLrp]) -> RouteTable {
        RouteTable::rebuild(desired, actual, &RouteTable::default())
    }

    /// As [`RouteTable::from_lrps`], keeping from `previous` what the router
    /// learned: each route's round-robin position and each instance's
    /// failures and requests in flight. An instance that did not change is
    /// the same `Endpoint` as in `previous` (shared, not rebuilt).
    pub fn rebuild(
        desired: &[DesiredLrp],
        actual: &[ActualLrp],
        previous: &RouteTable,
    ) -> RouteTable {
        RouteIndex::build(desired, actual, previous).1
    }

    fn hash(&self, name: &[u8]) -> u64 {
        self.hasher.hash_one(name)
    }

    /// The shard a hash falls in. Its middle bits: the shard's own table
    /// uses the low bits for the slot and the top ones for its tags.
    fn shard_of(&self, hash: u64) -> usize {
        (hash >> 32) as usize & (self.shard_count() - 1)
    }

    fn entry(&self, name: &[u8]) -> Option<&HostEntry> {
        let hash = self.hash(name);
        find_in(self.shard(self.shard_of(hash)), hash, name)
    }

    /// The pool for a request to `host` (any case, with or without a port)
    /// at `path` (the request target's path, query allowed): the longest
    /// matching path route of that host, as Gorouter matches. Allocates
    /// nothing.
    pub fn lookup(&self, host: &str, path: &str) -> Option<&Pool> {
        self.lookup_stripped(strip_host(host), path)
    }

    /// [`RouteTable::lookup`] for a host [`strip_host`] gave already (the
    /// proxy strips it once for its own checks).
    pub(crate) fn lookup_stripped(&self, host: &str, path: &str) -> Option<&Pool> {
        let bare = host.as_bytes();
        let entry = if bare.iter().any(u8::is_ascii_uppercase) {
            let mut lower = [0u8; MAX_HOST];
            let lower = lower.get_mut(..bare.len())?;
            lower.copy_from_slice(bare);
            lower.make_ascii_lowercase();
            self.entry(lower)?
        } else {
            self.entry(bare)?
        };
        entry.routes.lookup(path)
    }

    /// How many routes (host plus path) the table has.
    pub fn len(&self) -> usize {
        self.routes
    }

    pub fn is_empty(&self) -> bool {
        self.routes == 0
    }

    fn entries(&self) -> impl Iterator<Item = &HostEntry> {
        self.groups
            .iter()
            .flat_map(|group| group.iter())
            .flat_map(|shard| shard.iter())
            .filter_map(|slot| slot.0.as_ref())
    }

    /// Each endpoint of the table by its instance guid.
    fn endpoints_by_instance(&self) -> HashMap<&str, &Arc<Endpoint>, foldhash::fast::RandomState> {
        self.entries()
            .flat_map(|entry| entry.routes.pools())
            .flat_map(|pool| &pool.endpoints)
            .map(|e| (e.instance_guid.as_str(), e))
            .collect()
    }

    /// Puts in each host's new routes, making a new shard for each shard
    /// a change falls in (the others stay shared with any table this one
    /// was cloned from) and a new group for each group those are in.
    fn set_hosts(&mut self, mut changes: Vec<HostChange<'_>>) {
        changes.sort_unstable_by_key(|c| self.shard_of(c.hash));
        let mut rest = changes.as_mut_slice();
        while let Some(first) = rest.first() {
            let at = self.shard_of(first.hash);
            let same = rest
                .iter()
                .position(|c| self.shard_of(c.hash) != at)
                .unwrap_or(rest.len());
            let (these, later) = rest.split_at_mut(same);
            let shard = self.changed_shard(at, these);
            let mask = (1 << self.group_shift) - 1;
            Arc::make_mut(&mut self.groups[at >> self.group_shift])[at & mask] = shard;
            rest = later;
        }
    }

    /// Shard `at` with `changes` (all of hosts in it) made, counting the
    /// routes added and removed.
    fn changed_shard(&mut self, at: usize, changes: &mut [HostChange<'_>]) -> Shard {
        let is_changed = |e: &HostEntry| {
            changes
                .iter()
                .any(|c| c.hash == e.hash && c.name == e.name.as_bytes())
        };
        let old = self.shard(at);
        let mut entries = Vec::with_capacity(old.len() / 2 + changes.len());
        let mut removed = 0;
        for entry in old.iter().filter_map(|slot| slot.0.as_ref()) {
            if is_changed(entry) {
                removed += entry.routes.len();
            } else {
                entries.push(entry.clone());
            }
        }
        self.routes -= removed;
        for change in changes {
            if let Some(routes) = change.routes.take() {
                self.routes += routes.len();
                entries.push(HostEntry {
                    hash: change.hash,
                    name: HostName::new(change.name),
                    routes,
                });
            }
        }
        shard_of_entries(entries)
    }
}

/// What one process contributes to the table.
#[derive(Debug, Default)]
struct ProcessRoutes {
    /// Its route keys, sorted, without duplicates.
    keys: RouteKeys,
    /// Its RUNNING instances with a port, by index.
    endpoints: Vec<Arc<Endpoint>>,
}

/// The writer's side of the table: each process's routes and instances,
/// and which processes map each host, so that a change to one process
/// recomputes only the hosts it maps (before and after the change).
#[derive(Debug, Default)]
pub struct RouteIndex {
    processes: HashMap<String, ProcessRoutes, foldhash::fast::RandomState>,
    /// Host → the process guids mapping it (a route of each), sorted.
    hosts: HashMap<Box<str>, Vec<String>, foldhash::fast::RandomState>,
    /// Where a fresh route starts round-robin (a simple generator).
    fresh: u64,
}

impl RouteIndex {
    /// The index and table for this set of LRPs, keeping from `previous`
    /// its round-robin positions and instances' state (see
    /// [`RouteTable::rebuild`]).
    pub fn build(
        desired: &[DesiredLrp],
        actual: &[ActualLrp],
        previous: &RouteTable,
    ) -> (RouteIndex, RouteTable) {
        let mut index = RouteIndex {
            fresh: foldhash::fast::RandomState::default().hash_one(desired.len()),
            ..RouteIndex::default()
        };
        index.processes.reserve(desired.len());
        index.add_all(desired, actual, previous);
        let shards = index.hosts.len() / HOSTS_PER_SHARD;
        let mut table = RouteTable::with_shards(shards, previous.hasher.clone());
        let mut fresh = index.fresh;
        let changes = index
            .hosts
            .keys()
            .map(|host| index.host_change(&table, previous, host, &mut fresh))
            .collect();
        table.set_hosts(changes);
        index.fresh = fresh;
        (index, table)
    }

    /// Every process of `desired` with its instances in `actual`.
    fn add_all(&mut self, desired: &[DesiredLrp], actual: &[ActualLrp], previous: &RouteTable) {
        let known = previous.endpoints_by_instance();
        let by_process: HashMap<&str, usize, foldhash::fast::RandomState> = desired
            .iter()
            .enumerate()
            .map(|(i, d)| (d.process_guid.as_str(), i))
            .collect();
        let mut endpoints: Vec<Vec<Arc<Endpoint>>> = vec![Vec::new(); desired.len()];
        let mut addr = String::new();
        for a in actual {
            let Some(&i) = by_process.get(a.key.process_guid.as_str()) else {
                continue;
            };
            if let Some(endpoint) =
                endpoint_of(a, &desired[i], |guid| known.get(guid).copied(), &mut addr)
            {
                endpoints[i].push(endpoint);
            }
        }
        for (d, endpoints) in desired.iter().zip(endpoints) {
            self.insert(d, endpoints);
        }
    }

    /// Records `d` with `endpoints` (the process must not be recorded).
    fn insert(&mut self, d: &DesiredLrp, mut endpoints: Vec<Arc<Endpoint>>) {
        let keys = route_keys(d);
        let mut last: Option<&str> = None;
        for (host, _) in &keys {
            if last == Some(&**host) {
                continue;
            }
            last = Some(host);
            let processes = self.hosts.entry(host.clone()).or_default();
            if let Err(at) = processes.binary_search(&d.process_guid) {
                processes.insert(at, d.process_guid.clone());
            }
        }
        endpoints.sort_unstable_by_key(|e| e.index);
        self.processes
            .insert(d.process_guid.clone(), ProcessRoutes { keys, endpoints });
    }

    /// Forgets the process; its routes' hosts.
    fn remove(&mut self, process_guid: &str) -> Vec<Box<str>> {
        let Some(old) = self.processes.remove(process_guid) else {
            return Vec::new();
        };
        let mut hosts: Vec<Box<str>> = old.keys.into_iter().map(|(host, _)| host).collect();
        hosts.dedup();
        for host in &hosts {
            if let Some(processes) = self.hosts.get_mut(host) {
                processes.retain(|p| p != process_guid);
                if processes.is_empty() {
                    self.hosts.remove(host);
                }
            }
        }
        hosts
    }

    /// Records what one process is now: `desired` (`None`: gone) and its
    /// ActualLrps `actual` (evacuating ones too). Returns the hosts whose
    /// routes this may change, for [`RouteIndex::apply`].
    pub fn set_process(
        &mut self,
        process_guid: &str,
        desired: Option<&DesiredLrp>,
        actual: &[ActualLrp],
    ) -> Vec<Box<str>> {
        let before: Vec<Arc<Endpoint>> = self
            .processes
            .get(process_guid)
            .map(|p| p.endpoints.clone())
            .unwrap_or_default();
        let mut hosts = self.remove(process_guid);
        if let Some(d) = desired {
            let known = |guid: &str| before.iter().find(|e| e.instance_guid == guid);
            let mut addr = String::new();
            let endpoints = actual
                .iter()
                .filter(|a| a.key.process_guid == d.process_guid)
                .filter_map(|a| endpoint_of(a, d, known, &mut addr))
                .collect();
            self.insert(d, endpoints);
            hosts.extend(
                self.processes[process_guid]
                    .keys
                    .iter()
                    .map(|(h, _)| h.clone()),
            );
        }
        hosts.sort_unstable();
        hosts.dedup();
        hosts
    }

    /// The table `current` with the routes of `hosts` recomputed from the
    /// index. Shards without one of them are shared with `current`.
    pub fn apply(&mut self, current: &RouteTable, hosts: &[Box<str>]) -> RouteTable {
        let mut table = current.clone();
        let mut fresh = self.fresh;
        let changes = hosts
            .iter()
            .map(|host| self.host_change(&table, current, host, &mut fresh))
            .collect();
        table.set_hosts(changes);
        self.fresh = fresh;
        table
    }

    /// `host`'s routes from the index, for `table`, starting round-robin
    /// where `previous` was.
    fn host_change<'h>(
        &self,
        table: &RouteTable,
        previous: &RouteTable,
        host: &'h str,
        fresh: &mut u64,
    ) -> HostChange<'h> {
        let before = previous.entry(host.as_bytes()).map(|e| &e.routes);
        HostChange {
            hash: table.hash(host.as_bytes()),
            name: host.as_bytes(),
            routes: self.host_routes(host, before, fresh),
        }
    }

    /// The routes of `host` from every process mapping it (`None`: no
    /// process does), starting round-robin where `before` was.
    fn host_routes(
        &self,
        host: &str,
        before: Option<&HostRoutes>,
        fresh: &mut u64,
    ) -> Option<HostRoutes> {
        let processes = self.hosts.get(host)?;
        let mut routes = HostRoutes::default();
        for process_guid in processes {
            let Some(process) = self.processes.get(process_guid) else {
                continue;
            };
            for (_, path) in process.keys.iter().filter(|(h, _)| &**h == host) {
                let pool = routes.pool_or_add(path, || {
                    before
                        .and_then(|b| b.pool(path))
                        .map(|pool| pool.next.load(Ordering::Relaxed))
                        .unwrap_or_else(|| fresh_start(&mut *fresh))
                });
                pool.endpoints.extend(process.endpoints.iter().cloned());
            }
        }
        routes.settle();
        Some(routes)
    }
}

/// A fresh route starts at a random place, so that instance 0 does not
/// take the first request of every new route.
fn fresh_start(state: &mut u64) -> usize {
    *state = state
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1);
    (*state >> 16) as usize
}

/// A DesiredLrp's route keys, sorted, without duplicates or empty hosts.
fn route_keys(d: &DesiredLrp) -> RouteKeys {
    let mut keys: RouteKeys = d
        .routes
        .iter()
        .map(route_key)
        .filter(|(host, _)| !host.is_empty())
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// `(host, path)` of a route as the table keys it.
fn route_key(route: &HttpRoute) -> (Box<str>, String) {
    (
        normalize_host(&route.host).into(),
        normalize_path(&route.path),
    )
}

/// The endpoint an ActualLrp of `d` is, if it is RUNNING with a port: the
/// one `known` has for its instance if nothing about it changed, else a new
/// one, which keeps the known one's state if it is the same instance at the
/// same address (a host port is reused by the cell, and a new instance on
/// it must not inherit the failures of the one before, as Gorouter replaces
/// an endpoint whose instance id changed). `addr` is scratch space.
fn endpoint_of<'k>(
    a: &ActualLrp,
    d: &DesiredLrp,
    known: impl Fn(&str) -> Option<&'k Arc<Endpoint>>,
    addr: &mut String,
) -> Option<Arc<Endpoint>> {
    if a.state != ActualLrpState::Running {
        return None;
    }
    let net = a.net_info.as_ref()?;
    let ik = a.instance_key.as_ref()?;
    let port = net.ports.first()?;
    addr.clear();
    let bracket = net.address.contains(':') && !net.address.starts_with('[');
    let _ = if bracket {
        write!(addr, "[{}]:{}", net.address, port.host_port)
    } else {
        write!(addr, "{}:{}", net.address, port.host_port)
    };
    let before = known(ik.instance_guid.as_str()).filter(|e| e.addr == *addr);
    if let Some(before) = before
        && before.process_guid == d.process_guid
        && before.index == a.key.index
        && before.app_guid == d.log_guid
    {
        return Some(Arc::clone(before));
    }
    let mut endpoint = Endpoint::new(
        addr.clone(),
        d.log_guid.clone(),
        d.process_guid.clone(),
        a.key.index,
        ik.instance_guid.clone(),
    );
    if let Some(before) = before {
        endpoint.state = Arc::clone(&before.state);
    }
    Some(Arc::new(endpoint))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_model::bbs::*;

    fn desired(process_guid: &str, routes: &[&str]) -> DesiredLrp {
        DesiredLrp {
            routes: routes.iter().map(|r| HttpRoute::from(*r)).collect(),
            log_guid: format!("app-of-{process_guid}"),
            ..kiln_model::testing::desired_lrp(process_guid, 2)
        }
    }

    fn actual(process_guid: &str, index: u32, state: ActualLrpState, port: u16) -> ActualLrp {
        ActualLrp {
            key: ActualLrpKey {
                process_guid: process_guid.into(),
                index,
                domain: "cf-apps".into(),
            },
            instance_key: Some(ActualLrpInstanceKey {
                instance_guid: format!("ig-{index}"),
                cell_id: "c".into(),
            }),
            net_info: Some(ActualLrpNetInfo {
                address: "127.0.0.1".into(),
                ports: vec![PortMapping {
                    container_port: port,
                    host_port: port,
                }],
                instance_address: String::new(),
            }),
            state,
            crash_count: 0,
            crash_reason: String::new(),
            placement_error: String::new(),
            since: 0,
            presence: Default::default(),
        }
    }

    #[test]
    fn a_new_instance_on_a_reused_host_port_does_not_inherit_failures() {
        let d = desired("p", &["app.test"]);
        let before = RouteTable::from_lrps(
            std::slice::from_ref(&d),
            &[actual("p", 0, ActualLrpState::Running, 61000)],
        );
        let failed = &before.lookup("app.test", "/").unwrap().endpoints[0];
        failed.state.mark_failed(Duration::from_secs(30));

        // The same instance again: the router still remembers it failed.
        let same = RouteTable::rebuild(
            std::slice::from_ref(&d),
            &[actual("p", 0, ActualLrpState::Running, 61000)],
            &before,
        );
        assert!(
            same.lookup("app.test", "/").unwrap().endpoints[0]
                .state
                .recently_failed()
        );

        // A restarted instance the cell gave the same host port: a fresh start.
        let mut replacement = actual("p", 0, ActualLrpState::Running, 61000);
        replacement.instance_key.as_mut().unwrap().instance_guid = "ig-new".into();
        let after = RouteTable::rebuild(std::slice::from_ref(&d), &[replacement], &before);
        let endpoint = &after.lookup("app.test", "/").unwrap().endpoints[0];
        assert_eq!(endpoint.instance_guid, "ig-new");
        assert!(!endpoint.state.recently_failed());
    }

    #[test]
    fn a_rebuild_reuses_unchanged_instances_and_keeps_round_robin() {
        let d = [desired("p1", &["a.test", "a.test/api"])];
        let a = [
            actual("p1", 0, ActualLrpState::Running, 1),
            actual("p1", 1, ActualLrpState::Running, 2),
        ];
        let before = RouteTable::from_lrps(&d, &a);
        let old = before.lookup("a.test", "/").unwrap();
        let first = old.attempt_order().next().unwrap().index;

        let mut moved = a.clone();
        moved[1].net_info.as_mut().unwrap().ports[0].host_port = 3;
        let after = RouteTable::rebuild(&d, &moved, &before);
        let new = after.lookup("a.test", "/").unwrap();
        assert!(
            Arc::ptr_eq(&new.endpoints[0], &old.endpoints[0]),
            "unchanged: shared"
        );
        assert!(
            !Arc::ptr_eq(&new.endpoints[1], &old.endpoints[1]),
            "moved: new"
        );
        assert_eq!(new.endpoints[1].addr, "127.0.0.1:3");
        let path = after.lookup("a.test", "/api/x").unwrap();
        assert!(
            Arc::ptr_eq(&path.endpoints[0], &new.endpoints[0]),
            "one endpoint per instance"
        );
        assert_ne!(
            new.attempt_order().next().unwrap().index,
            first,
            "round-robin goes on from where the old table was"
        );
    }

    #[test]
    fn hosts_are_normalized() {
        for (input, expected) in [
            ("App.Example.COM", "app.example.com"),
            ("app.example.com:8080", "app.example.com"),
            ("app.example.com.", "app.example.com"),
            ("app.example.com.:80", "app.example.com"),
            (" app ", "app"),
            ("[::1]:8080", "::1"),
            ("app:", "app"),
            ("app:8a", "app:8a"),
            ("a:b:80", "a:b"),
            ("8080", "8080"),
            ("", ""),
        ] {
            assert_eq!(normalize_host(input), expected, "{input:?}");
        }
    }

    #[test]
    fn only_running_instances_are_endpoints_and_empty_routes_stay_known() {
        let d = [
            desired("p1", &["a.test"]),
            desired("p2", &["b.test", "alias.test"]),
        ];
        let a = [
            actual("p1", 0, ActualLrpState::Running, 61001),
            actual("p1", 1, ActualLrpState::Claimed, 61002),
            actual("p2", 0, ActualLrpState::Running, 61003),
            actual("p2", 1, ActualLrpState::Crashed, 61005),
            actual("orphan", 0, ActualLrpState::Running, 61004),
        ];
        let table = RouteTable::from_lrps(&d, &a);
        assert_eq!(table.len(), 3);
        let pool = table.lookup("A.test:80", "/").unwrap();
        assert_eq!(pool.endpoints.len(), 1);
        assert_eq!(pool.endpoints[0].addr, "127.0.0.1:61001");
        assert_eq!(pool.endpoints[0].app_guid, "app-of-p1");
        assert_eq!(pool.endpoints[0].instance_guid, "ig-0");
        assert_eq!(
            table.lookup("alias.test", "/").unwrap().endpoints[0].addr,
            "127.0.0.1:61003"
        );
        assert!(table.lookup("nowhere.test", "/").is_none());

        let no_instances = RouteTable::from_lrps(&d, &[]);
        assert!(
            no_instances
                .lookup("a.test", "/")
                .unwrap()
                .endpoints
                .is_empty()
        );
    }

    #[test]
    fn processes_sharing_a_host_share_its_pool_once_each() {
        let d = [
            desired("web", &["shop.test", "SHOP.test"]),
            desired("worker", &["shop.test"]),
        ];
        let a = [
            actual("worker", 0, ActualLrpState::Running, 2),
            actual("web", 0, ActualLrpState::Running, 1),
        ];
        let table = RouteTable::from_lrps(&d, &a);
        let pool = table.lookup("shop.test", "/").unwrap();
        let addrs: Vec<_> = pool.endpoints.iter().map(|e| e.addr.as_str()).collect();
        assert_eq!(addrs, ["127.0.0.1:1", "127.0.0.1:2"]);
    }

    #[test]
    fn the_longest_path_prefix_with_instances_wins() {
        let d = [
            desired("root", &["shop.test"]),
            desired("api", &["shop.test/api"]),
            desired("v2", &["shop.test/API/v2/"]),
            desired("down", &["shop.test/api/v2/down"]),
        ];
        let a = [
            actual("root", 0, ActualLrpState::Running, 1),
            actual("api", 0, ActualLrpState::Running, 2),
            actual("v2", 0, ActualLrpState::Running, 3),
        ];
        let table = RouteTable::from_lrps(&d, &a);
        assert_eq!(table.len(), 4);
        let port = |path: &str| {
            table
                .lookup("shop.test", path)
                .map(|pool| pool.endpoints.first().map(|e| e.addr.clone()))
        };
        let at = |p: u16| Some(Some(format!("127.0.0.1:{p}")));
        assert_eq!(port("/"), at(1));
        assert_eq!(port("/apis"), at(1), "whole segments only");
        assert_eq!(port("/api"), at(2));
        assert_eq!(port("/api/"), at(2));
        assert_eq!(port("/Api/x?y=1"), at(2), "any case");
        assert_eq!(port("/api?v2"), at(2));
        assert_eq!(port("/api/v2"), at(3));
        assert_eq!(port("/api/v2/x"), at(3));
        // `/api/v2/down` has no instance: the next longest prefix takes it.
        assert_eq!(port("/api/v2/down/x"), at(3));
        assert_eq!(port("*"), at(1));

        // With no shorter route that has instances, the empty match answers (503).
        let only_empty = RouteTable::from_lrps(&[desired("down", &["x.test/a"])], &[]);
        assert!(
            only_empty
                .lookup("x.test", "/a/b")
                .unwrap()
                .endpoints
                .is_empty()
        );
        assert!(only_empty.lookup("x.test", "/").is_none(), "no route at /");
    }

    #[test]
    fn lookups_stay_exact_among_many_routes() {
        let d: Vec<DesiredLrp> = (0..20_000)
            .map(|i| {
                let (host, path) = (format!("app-{i}.test"), format!("app-{i}.test/p"));
                desired(&format!("p{i}"), &[host.as_str(), path.as_str()])
            })
            .collect();
        let a: Vec<ActualLrp> = (0..20_000u32)
            .map(|i| {
                actual(
                    &format!("p{i}"),
                    0,
                    ActualLrpState::Running,
                    (i % 60_000) as u16 + 1,
                )
            })
            .collect();
        let table = RouteTable::from_lrps(&d, &a);
        assert_eq!(table.len(), 40_000);
        let pool = table.lookup("APP-19999.test", "/p/q").unwrap();
        assert_eq!(pool.endpoints[0].process_guid, "p19999");
    }

    #[test]
    fn ipv6_addresses_are_bracketed() {
        let mut a = actual("p1", 0, ActualLrpState::Running, 8080);
        a.net_info.as_mut().unwrap().address = "::1".into();
        let table = RouteTable::from_lrps(&[desired("p1", &["v6.test"])], &[a]);
        assert_eq!(
            table.lookup("v6.test", "/").unwrap().endpoints[0].addr,
            "[::1]:8080"
        );
    }

    #[test]
    fn attempts_start_round_robin_and_cover_every_endpoint() {
        let d = [desired("p1", &["a.test"])];
        let a = [
            actual("p1", 0, ActualLrpState::Running, 1),
            actual("p1", 1, ActualLrpState::Running, 2),
            actual("p1", 2, ActualLrpState::Running, 3),
        ];
        let table = RouteTable::from_lrps(&d, &a);
        let pool = table.lookup("a.test", "/").unwrap();
        let orders: Vec<Vec<u32>> = (0..3)
            .map(|_| pool.attempt_order().map(|e| e.index).collect())
            .collect();
        for order in &orders {
            let mut sorted = order.clone();
            sorted.sort();
            assert_eq!(sorted, [0, 1, 2], "every endpoint once: {order:?}");
        }
        let mut firsts: Vec<u32> = orders.iter().map(|o| o[0]).collect();
        firsts.sort();
        assert_eq!(
            firsts,
            [0, 1, 2],
            "each request starts at the next instance"
        );
    }

    /// Each route's endpoint addresses, for comparing two tables.
    fn snapshot_of(table: &RouteTable, queries: &[(&str, &str)]) -> Vec<Option<Vec<String>>> {
        queries
            .iter()
            .map(|(host, path)| {
                table
                    .lookup(host, path)
                    .map(|pool| pool.endpoints.iter().map(|e| e.addr.clone()).collect())
            })
            .collect()
    }

    #[test]
    fn a_patched_table_matches_a_rebuilt_one_and_shares_the_rest() {
        // 200 apps, so the table has several shards.
        let mut d: Vec<DesiredLrp> = (0..200)
            .map(|i| desired(&format!("p{i}"), &[format!("app-{i}.test").as_str()]))
            .collect();
        d.push(desired("shared", &["app-0.test", "app-0.test/api"]));
        let mut a: Vec<ActualLrp> = (0..200u16)
            .map(|i| actual(&format!("p{i}"), 0, ActualLrpState::Running, 1000 + i))
            .collect();
        a.push(actual("shared", 0, ActualLrpState::Running, 2000));
        let (mut index, before) = RouteIndex::build(&d, &a, &RouteTable::default());
        assert!(before.shard_count() > 1);
        let queries = [
            ("app-0.test", "/"),
            ("app-0.test", "/api/x"),
            ("app-1.test", "/"),
            ("app-2.test", "/"),
            ("new.test", "/"),
            ("app-199.test", "/"),
        ];

        // p1 moves to another host and gets a second instance; p2 is
        // deleted; `shared` loses its instance; a new process maps new.test.
        d[1] = desired("p1", &["new.test", "app-1.test/v2"]);
        d.remove(2);
        a.retain(|a| a.key.process_guid != "p2" && a.key.process_guid != "shared");
        a.push(actual("p1", 1, ActualLrpState::Running, 3000));
        let mut hosts = Vec::new();
        let p1: Vec<ActualLrp> = a
            .iter()
            .filter(|a| a.key.process_guid == "p1")
            .cloned()
            .collect();
        hosts.extend(index.set_process("p1", Some(&d[1]), &p1));
        hosts.extend(index.set_process("p2", None, &[]));
        let shared = d
            .iter()
            .find(|d| d.process_guid == "shared")
            .unwrap()
            .clone();
        hosts.extend(index.set_process("shared", Some(&shared), &[]));
        hosts.sort_unstable();
        hosts.dedup();
        let patched = index.apply(&before, &hosts);
        let rebuilt = RouteTable::rebuild(&d, &a, &before);

        assert_eq!(
            snapshot_of(&patched, &queries),
            snapshot_of(&rebuilt, &queries)
        );
        assert_eq!(patched.len(), rebuilt.len());
        assert!(patched.lookup("app-2.test", "/").is_none(), "deleted");
        assert_eq!(
            patched.lookup("app-1.test", "/").map(|p| p.endpoints.len()),
            None
        );
        assert_eq!(
            patched.lookup("app-1.test", "/v2").unwrap().endpoints.len(),
            2
        );
        let api = patched.entry(b"app-0.test").unwrap().routes.pool("/api");
        assert!(api.unwrap().endpoints.is_empty(), "known, no instance");
        let shards = |t: &RouteTable| -> Vec<Shard> {
            t.groups.iter().flat_map(|g| g.iter().cloned()).collect()
        };
        assert_eq!(
            shards(&before)
                .iter()
                .zip(shards(&patched).iter())
                .filter(|(a, b)| Arc::ptr_eq(a, b))
                .count(),
            before.shard_count() - {
                let mut touched: Vec<usize> = hosts
                    .iter()
                    .map(|h| before.shard_of(before.hash(h.as_bytes())))
                    .collect();
                touched.sort_unstable();
                touched.dedup();
                touched.len()
            },
            "only the shards of changed hosts are copied"
        );
        // The untouched instance is the same endpoint, with its state.
        assert!(Arc::ptr_eq(
            &before.lookup("app-199.test", "/").unwrap().endpoints[0],
            &patched.lookup("app-199.test", "/").unwrap().endpoints[0]
        ));
        // The old table is as it was.
        assert_eq!(before.lookup("app-2.test", "/").unwrap().endpoints.len(), 1);
    }

    #[test]
    fn a_patch_to_a_large_table_copies_one_group_of_shards() {
        // Enough hosts for several groups of shards.
        let hosts = 4 * SHARDS_PER_GROUP * HOSTS_PER_SHARD;
        let d: Vec<DesiredLrp> = (0..hosts)
            .map(|i| desired(&format!("p{i}"), &[format!("app-{i}.test").as_str()]))
            .collect();
        let a: Vec<ActualLrp> = (0..hosts)
            .map(|i| actual(&format!("p{i}"), 0, ActualLrpState::Running, i as u16))
            .collect();
        let (mut index, before) = RouteIndex::build(&d, &a, &RouteTable::default());
        assert!(before.groups.len() >= 4, "{} groups", before.groups.len());

        let moved = [actual("p7", 0, ActualLrpState::Running, 65_000)];
        let changed = index.set_process("p7", Some(&d[7]), &moved);
        let after = index.apply(&before, &changed);

        let shared_groups = before
            .groups
            .iter()
            .zip(after.groups.iter())
            .filter(|(a, b)| Arc::ptr_eq(a, b))
            .count();
        assert_eq!(shared_groups, before.groups.len() - 1);
        assert_eq!(
            after.lookup("app-7.test", "/").unwrap().endpoints[0].addr,
            "127.0.0.1:65000"
        );
        for i in [0, 6, 8, hosts - 1] {
            let host = format!("app-{i}.test");
            assert!(Arc::ptr_eq(
                &before.lookup(&host, "/").unwrap().endpoints[0],
                &after.lookup(&host, "/").unwrap().endpoints[0]
            ));
        }
        assert_eq!(after.len(), before.len());
    }

    #[test]
    fn a_patch_keeps_round_robin_and_instance_state() {
        let d = [desired("p1", &["a.test"])];
        let a = [
            actual("p1", 0, ActualLrpState::Running, 1),
            actual("p1", 1, ActualLrpState::Running, 2),
        ];
        let (mut index, before) = RouteIndex::build(&d, &a, &RouteTable::default());
        let pool = before.lookup("a.test", "/").unwrap();
        let first = pool.attempt_order().next().unwrap().index;
        pool.endpoints[0].state.mark_failed(Duration::from_secs(30));
        let hosts = index.set_process("p1", Some(&d[0]), &a);
        let after = index.apply(&before, &hosts);
        let pool = after.lookup("a.test", "/").unwrap();
        assert!(pool.endpoints[0].state.recently_failed());
        assert_ne!(pool.attempt_order().next().unwrap().index, first);
    }

    #[test]
    fn hosts_longer_than_the_inline_room_and_in_upper_case_are_found() {
        let long = format!("{}.apps.example.com", "a".repeat(INLINE_HOST));
        let table = RouteTable::from_lrps(
            &[desired("p1", &[long.as_str()])],
            &[actual("p1", 0, ActualLrpState::Running, 1)],
        );
        assert!(table.lookup(&long, "/").is_some());
        assert!(table.lookup(&long.to_ascii_uppercase(), "/").is_some());
        assert!(table.lookup(&"A".repeat(300), "/").is_none());
    }
}
