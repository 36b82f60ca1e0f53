//! The compiled rule set: logsource routing, the rule index, evaluation.
//!
//! Per event: [`crate::json::extract`] reads the fields the rule set uses
//! (one pass, no tree), then only the rules that could match are tried: each
//! class (see [`EventClass`]) has its own rules, indexed by the literal values
//! of the class's key field (`eventName` for CloudTrail, `detail-type` for
//! EventBridge classes) that a rule's condition *requires*. A rule whose
//! condition does not pin the key field is indexed by another field it pins
//! (`eventSource` first, e.g. `eventName|startswith` rules of one service;
//! else `userIdentity.type`, `errorCode`, ...), is left out when a field it
//! needs can never match (an unset placeholder), and only a rule that pins
//! nothing is tried on every event of its class. The index only skips rules
//! that cannot match: [`RuleSet::eval_unfiltered`] tries every rule, and a
//! test requires both to give the same matches.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_norway::Mapping;

use crate::compile::{CompileOptions, Ctx, FieldTable, Search};
use crate::condition::{self, Cond};
use crate::doc::{Event, Values};
use crate::error::{RuleError, RuleErrors, RuleWarning};
use crate::json::{self, JsonError, PathTrie};
use crate::logsource::EventClass;
use crate::matcher::{Pat, StrOp, Test};
use crate::meta::{LeftOut, RuleMeta, RuleSelect};
use crate::parse::{self, DetectionDoc, DocText, FilterDoc, LogSource, RuleDoc};
use crate::window::{self, CorrelationRule, RuleRef};

/// A rule file to load: a name for messages (path or `builtin:...`) and text.
#[derive(Debug, Clone)]
pub struct RuleFile {
    pub name: String,
    pub text: String,
}

/// A compiled detection rule.
#[derive(Debug, Clone)]
pub struct DetectionRule {
    pub meta: RuleMeta,
    pub logsource: LogSource,
    /// Bit `EventClass::index()` is set for each class the rule sees.
    pub classes: u8,
    pub search_names: Vec<String>,
    pub searches: Vec<Search>,
    pub cond: Cond,
    /// The condition as written (`(rule) and (filter)` with filters).
    pub condition_text: String,
    /// Ids of the Sigma filters applied to the rule, in load order.
    pub filters: Vec<String>,
    /// Test cases kept with the rule (`tests:`), unparsed.
    pub tests: Option<serde_norway::Value>,
    /// Literal key-field values (lowercase) the condition requires, if any.
    pub index_keys: Option<BTreeSet<String>>,
    /// Reports nothing alone: a refused correlation (a Sigma 2 one, or a v1
    /// aggregation's count over its `<id>/match` searches) asked to keep it
    /// quiet (`generate: false`).
    pub quiet: bool,
}

impl DetectionRule {
    #[inline]
    pub fn matches(&self, ev: &Event<'_>) -> bool {
        self.cond.eval(&mut |i| self.searches[i].matches(ev))
    }

    pub fn sees(&self, class: EventClass) -> bool {
        self.classes & (1 << class.index()) != 0
    }
}

/// Rules by the literal values (lowercase) one field must have for them to match.
#[derive(Debug, Clone, Default)]
struct KeyIndex {
    field: u32,
    by_key: HashMap<Box<str>, Vec<u32>, FxBuild>,
    /// The longest key, in bytes: a longer ASCII value cannot hit.
    max_len: usize,
}

impl KeyIndex {
    fn new(field: u32) -> Self {
        KeyIndex { field, ..Default::default() }
    }

    fn add(&mut self, key: &str, rule: u32) {
        self.max_len = self.max_len.max(key.len());
        self.by_key.entry(key.into()).or_default().push(rule);
    }

    /// Keeps only the rules `live` marks (their index in the set).
    fn retain(&mut self, live: &[bool]) {
        self.by_key.retain(|_, rules| {
            rules.retain(|r| live[*r as usize]);
            !rules.is_empty()
        });
    }

    /// Appends the rules indexed under any scalar value of the field;
    /// returns how many values hit (more than one may repeat rules).
    #[inline]
    fn lookup(&self, ev: &Event<'_>, out: &mut Vec<u32>) -> usize {
        let mut hits = 0;
        for v in ev.vals.get(self.field) {
            if !v.kind.is_scalar() {
                continue;
            }
            let t = ev.vals.text(ev.src, v);
            let found = if t.is_ascii() {
                if t.len() > self.max_len {
                    continue;
                }
                let mut buf = [0u8; 128];
                if t.len() <= buf.len() {
                    let b = &mut buf[..t.len()];
                    b.copy_from_slice(t.as_bytes());
                    b.make_ascii_lowercase();
                    // ASCII bytes are valid UTF-8.
                    std::str::from_utf8(b).ok().and_then(|k| self.by_key.get(k))
                } else {
                    self.by_key.get(t.to_ascii_lowercase().as_str())
                }
            } else {
                // Lowercasing may change the length of non-ASCII text.
                self.by_key.get(t.to_lowercase().as_str())
            };
            if let Some(rules) = found {
                out.extend_from_slice(rules);
                hits += 1;
            }
        }
        hits
    }
}

/// FxHash (rustc's): the keys are short API names and types, hashed once
/// per event and index field; SipHash's flood resistance is not needed for
/// a table built from the rules.
#[derive(Debug, Clone, Copy, Default)]
struct FxBuild;

#[derive(Debug, Clone, Copy, Default)]
struct FxHasher(u64);

impl std::hash::BuildHasher for FxBuild {
    type Hasher = FxHasher;
    fn build_hasher(&self) -> FxHasher {
        FxHasher(0)
    }
}

impl std::hash::Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
            self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(K);
        }
        for &b in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.write(&[i]);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

#[derive(Debug, Clone, Default)]
struct ClassIndex {
    /// The class's key field (`eventName`, `detail-type`).
    primary: KeyIndex,
    /// Other fields pinned by rules that do not pin the key field.
    secondary: Vec<KeyIndex>,
    /// Rules that pin no field: tried on every event of the class.
    always: Vec<u32>,
    /// Every rule of the class, in order (the unfiltered path).
    all: Vec<u32>,
}

impl ClassIndex {
    fn retain(&mut self, live: &[bool]) {
        self.primary.retain(live);
        for k in &mut self.secondary {
            k.retain(live);
        }
        self.always.retain(|r| live[*r as usize]);
        self.all.retain(|r| live[*r as usize]);
    }
}

/// Well-known fields every event is read for (ids, times, index keys).
#[derive(Debug, Clone, Copy)]
pub struct MetaFields {
    pub event_name: u32,
    pub event_source: u32,
    pub event_id: u32,
    pub event_time: u32,
    pub eb_id: u32,
    pub eb_time: u32,
    pub eb_detail_type: u32,
}

/// Correlations a chain may hold (one using another's alerts, and so on).
/// Sigma chains are two or three long.
pub const MAX_CHAIN: usize = 16;

/// Every rule, compiled, with the fields they read.
#[derive(Debug, Clone)]
pub struct RuleSet {
    rules: Vec<DetectionRule>,
    fields: FieldTable,
    trie: PathTrie,
    keywords: bool,
    classes: Vec<ClassIndex>,
    pub meta_fields: MetaFields,
    correlations: Vec<CorrelationRule>,
    det_consumers: Vec<Vec<(usize, usize)>>,
    corr_consumers: Vec<Vec<(usize, usize)>>,
    emit: Vec<bool>,
    corr_emit: Vec<bool>,
    corr_live: Vec<bool>,
    select: RuleSelect,
}

/// Resolves correlation references by id or name.
struct Names<'a> {
    rules: &'a [DetectionRule],
    correlations: &'a [CorrelationRule],
}

impl window::Resolver for Names<'_> {
    fn resolve(&self, name: &str) -> Option<RuleRef> {
        let hit = |m: &RuleMeta| m.id == name || m.name.as_deref() == Some(name);
        if let Some(i) = self.rules.iter().position(|r| hit(&r.meta)) {
            return Some(RuleRef::Detection(i as u32));
        }
        self.correlations.iter().position(|c| hit(&c.meta)).map(RuleRef::Correlation)
    }

    fn names_of(&self, r: RuleRef) -> Vec<String> {
        let m = match r {
            RuleRef::Detection(i) => &self.rules[i as usize].meta,
            RuleRef::Correlation(i) => &self.correlations[i].meta,
        };
        let mut v = Vec::new();
        if let Some(n) = &m.name {
            v.push(n.clone());
        }
        v.push(m.id.clone());
        v
    }

    fn kind_of(&self, r: RuleRef) -> Option<window::CorrelationType> {
        match r {
            RuleRef::Detection(_) => None,
            RuleRef::Correlation(i) => Some(self.correlations[i].kind),
        }
    }
}

/// Per-thread reusable buffers for evaluation.
#[derive(Debug)]
pub struct Scratch {
    pub(crate) vals: Values,
    pub(crate) cands: Vec<u32>,
    /// Candidates from the secondary index and `always` (sorted, deduplicated).
    rest: Vec<u32>,
    /// Detection evaluations per rule index since the last
    /// [`Scratch::drain_evaluations`]: a plain add in the loop, no atomics.
    evals: Vec<u64>,
}

impl Scratch {
    /// Calls `f(rule index, evaluations)` for every rule evaluated since the
    /// last call, and resets the counts (the caller publishes them).
    pub fn drain_evaluations(&mut self, mut f: impl FnMut(u32, u64)) {
        for (i, n) in self.evals.iter_mut().enumerate() {
            if *n > 0 {
                f(i as u32, *n);
                *n = 0;
            }
        }
    }
}

impl RuleSet {
    /// Parses and compiles rule files. All errors of all files are reported;
    /// any error fails the load (`rules validate`, `--strict`).
    pub fn load(files: &[RuleFile], opts: &CompileOptions) -> Result<(RuleSet, Vec<RuleWarning>), RuleErrors> {
        let (set, warnings, errors) = RuleSet::load_skipping(files, opts);
        if errors.is_empty() {
            Ok((set, warnings))
        } else {
            Err(RuleErrors(errors))
        }
    }

    /// Like [`RuleSet::load`], but a rule that fails to parse or compile is
    /// left out and its error returned, and the rest load: one rule a
    /// detector cannot use must cost that rule, not the run. A correlation
    /// over a rule left out fails to resolve it and is left out too.
    pub fn load_skipping(files: &[RuleFile], opts: &CompileOptions) -> (RuleSet, Vec<RuleWarning>, Vec<RuleError>) {
        let mut errors = Vec::new();
        let mut docs = Vec::new();
        for f in files {
            match parse::parse_file(&f.name, &f.text) {
                Ok(d) => docs.extend(d),
                Err(e) => errors.push(e),
            }
        }
        let mut b = Builder::new(opts);
        let filters = b.compile_filters(&docs, &mut errors);
        let mut used = vec![false; filters.len()];
        for d in &docs {
            if let RuleDoc::Detection(det) = d {
                let apply = b.filters_for(det, &filters, &mut used);
                if let Err(e) = b.add_detection(det, &apply) {
                    errors.push(e);
                }
            }
        }
        b.warn_unused_filters(&filters, &used, &docs);
        // Correlations after every detection rule, in file order, so they can
        // refer to rules in any file and to correlations before them.
        let mut correlations: Vec<CorrelationRule> = Vec::new();
        let mut depths: Vec<usize> = Vec::new();
        for d in &docs {
            if let RuleDoc::Correlation(c) = d {
                let resolver = Names { rules: &b.rules, correlations: &correlations };
                let accepted = window::compile(c, &resolver, &mut b.fields).and_then(|cr| {
                    // An alert feeds the correlation that uses it by a
                    // call per link: a bound keeps a chain off the stack's end.
                    let depth = 1 + cr
                        .rules
                        .iter()
                        .filter_map(|r| match r {
                            RuleRef::Correlation(k) => Some(depths[*k]),
                            RuleRef::Detection(_) => None,
                        })
                        .max()
                        .unwrap_or(0);
                    if depth > MAX_CHAIN {
                        return Err(c.doc.error(
                            c.doc.line_of("rules"),
                            format!("correlations chained more than {MAX_CHAIN} deep (this one is link {depth})"),
                        ));
                    }
                    if let Some((file, line)) = b.ids.get(&cr.meta.id) {
                        return Err(c.doc.error(
                            c.doc.line_of("id"),
                            format!("duplicate rule id `{}` (first defined at {file}:{line})", cr.meta.id),
                        ));
                    }
                    Ok((cr, depth))
                });
                match accepted {
                    Ok((cr, depth)) => {
                        b.ids.insert(cr.meta.id.clone(), (c.doc.file.to_string(), c.doc.first_line));
                        if let Some((line, message)) = &c.warning {
                            let (file, line, message) = (c.doc.file.to_string(), *line, message.clone());
                            b.warnings.push(RuleWarning { file, line, message, unread_source: None });
                        }
                        correlations.push(cr);
                        depths.push(depth);
                    }
                    Err(e) => {
                        errors.push(e);
                        let silenced = window::silenced(c, &Names { rules: &b.rules, correlations: &correlations });
                        b.keep_quiet(c, &silenced, &mut correlations);
                    }
                }
            }
        }
        for p in &opts.extra_fields {
            b.fields.intern(p);
        }
        let (mut set, warnings) = b.finish();
        set.set_correlations(correlations);
        (set, warnings, errors)
    }

    pub fn rules(&self) -> &[DetectionRule] {
        &self.rules
    }

    /// Correlation rules, in load order (a correlation only refers to
    /// detections and to correlations before it).
    pub fn correlations(&self) -> &[CorrelationRule] {
        &self.correlations
    }

    /// Who consumes the matches of a detection rule: (correlation, position
    /// of the rule in its `rules` list).
    pub fn detection_consumers(&self, rule: u32) -> &[(usize, usize)] {
        &self.det_consumers[rule as usize]
    }

    /// Who consumes the alerts of a correlation (chained correlations).
    pub fn correlation_consumers(&self, corr: usize) -> &[(usize, usize)] {
        &self.corr_consumers[corr]
    }

    /// Whether a detection's own matches are reported: not when only
    /// correlations with `generate: false` use it.
    pub fn emits(&self, rule: u32) -> bool {
        self.emit[rule as usize]
    }

    /// Same for a correlation: not when only correlations with `generate:
    /// false` use it, or when the selection leaves it out.
    pub fn correlation_emits(&self, corr: usize) -> bool {
        self.corr_emit[corr]
    }

    /// Whether a correlation is fed at all: it reports, or a correlation
    /// that is fed uses it. One the selection left out, and that no live
    /// correlation uses, sees no match and never fires.
    pub fn correlation_live(&self, corr: usize) -> bool {
        self.corr_live[corr]
    }

    /// The rules and correlations [`CompileOptions::select`] leaves out
    /// (they report nothing), with why: (id, title, why).
    pub fn left_out(&self) -> Vec<(&str, &str, LeftOut)> {
        let metas = self.rules.iter().map(|r| &r.meta).chain(self.correlations.iter().map(|c| &c.meta));
        metas.filter_map(|m| self.select.left_out(m).map(|why| (m.id.as_str(), m.title.as_str(), why))).collect()
    }

    fn set_correlations(&mut self, correlations: Vec<CorrelationRule>) {
        let mut det_consumers = vec![Vec::new(); self.rules.len()];
        let mut corr_consumers = vec![Vec::new(); correlations.len()];
        let mut emit = vec![true; self.rules.len()];
        let mut corr_emit = vec![true; correlations.len()];
        let mut generated_det = vec![false; self.rules.len()];
        let mut generated_corr = vec![false; correlations.len()];
        for (ci, c) in correlations.iter().enumerate() {
            for (pos, r) in c.rules.iter().enumerate() {
                match r {
                    RuleRef::Detection(d) => {
                        det_consumers[*d as usize].push((ci, pos));
                        emit[*d as usize] = false;
                        generated_det[*d as usize] |= c.generate;
                    }
                    RuleRef::Correlation(k) => {
                        corr_consumers[*k].push((ci, pos));
                        corr_emit[*k] = false;
                        generated_corr[*k] |= c.generate;
                    }
                }
            }
        }
        // Rules the selection leaves out report nothing, whatever `generate` says.
        // Rules a refused correlation silenced report only through another.
        for i in 0..emit.len() {
            let alone = emit[i] && !self.rules[i].quiet;
            emit[i] = (alone | generated_det[i]) && self.select.left_out(&self.rules[i].meta).is_none();
        }
        for i in 0..corr_emit.len() {
            let alone = corr_emit[i] && !correlations[i].quiet;
            corr_emit[i] = (alone | generated_corr[i]) && self.select.left_out(&correlations[i].meta).is_none();
        }
        // A correlation that reports nothing and feeds no live correlation
        // (left out by the selection) is fed nothing: consumers only name
        // live ones. A correlation only uses earlier ones, so one pass from
        // the last decides.
        let mut corr_live = corr_emit.clone();
        for ci in (0..correlations.len()).rev() {
            corr_live[ci] |= corr_consumers[ci].iter().any(|&(cj, _)| corr_live[cj]);
        }
        if corr_live.contains(&false) {
            det_consumers.iter_mut().chain(corr_consumers.iter_mut()).for_each(|v| v.retain(|&(cj, _)| corr_live[cj]));
        }
        // A rule that reports nothing and feeds no live correlation (left out
        // by the selection, itself or with its correlations) is not tried.
        let live: Vec<bool> = (0..emit.len()).map(|i| emit[i] || !det_consumers[i].is_empty()).collect();
        if live.contains(&false) {
            self.classes.iter_mut().for_each(|c| c.retain(&live));
        }
        self.det_consumers = det_consumers;
        self.corr_consumers = corr_consumers;
        self.emit = emit;
        self.corr_emit = corr_emit;
        self.corr_live = corr_live;
        self.correlations = correlations;
    }

    /// The same rules with only the correlations `keep` (indices into
    /// [`RuleSet::correlations`], any order), for running correlations on
    /// different input than the rest (the service's re-keying stage). A kept
    /// correlation may not use one left out. Detection rules and field ids
    /// stay as they are, so a rule index means the same rule in both sets.
    /// `detections`: whether detections report their own matches as in this
    /// set (computed over every correlation, so a base rule of a correlation
    /// left out stays quiet unless that correlation said `generate: true`), or
    /// never (a set that must only produce correlation alerts).
    pub fn with_correlations(&self, keep: &[usize], detections: bool) -> Result<RuleSet, String> {
        let mut keep: Vec<usize> = keep.to_vec();
        keep.sort_unstable();
        keep.dedup();
        let mut new_index = vec![None; self.correlations.len()];
        for (n, &ci) in keep.iter().enumerate() {
            if ci >= self.correlations.len() {
                return Err(format!("no correlation {ci}"));
            }
            new_index[ci] = Some(n);
        }
        let mut correlations = Vec::with_capacity(keep.len());
        for &ci in &keep {
            let mut c = self.correlations[ci].clone();
            for r in &mut c.rules {
                if let RuleRef::Correlation(k) = r {
                    match new_index[*k] {
                        Some(n) => *k = n,
                        None => {
                            return Err(format!(
                                "correlation {} uses correlation {}, which is left out",
                                c.meta.id, self.correlations[*k].meta.id
                            ))
                        }
                    }
                }
            }
            correlations.push(c);
        }
        let mut set = self.clone();
        set.set_correlations(correlations);
        set.emit = if detections { self.emit.clone() } else { vec![false; self.rules.len()] };
        Ok(set)
    }

    /// The first value of each field in `fields` of the event last read into
    /// `scratch` (by [`RuleSet::eval`], whose `json` this must be); None
    /// when one is missing. Reads a correlation's group-by values as the
    /// engine does (`CorrelationRule::group_fields`).
    pub fn read_fields<'a>(&self, json: &'a str, scratch: &'a Scratch, fields: &[u32]) -> Option<Vec<&'a str>> {
        let ev = Event { src: json, vals: &scratch.vals };
        fields.iter().map(|f| ev.first(*f)).collect()
    }

    pub fn rule(&self, idx: u32) -> &DetectionRule {
        &self.rules[idx as usize]
    }

    pub fn fields(&self) -> &FieldTable {
        &self.fields
    }

    pub fn scratch(&self) -> Scratch {
        Scratch {
            vals: Values::new(self.fields.len()),
            cands: Vec::with_capacity(64),
            rest: Vec::with_capacity(64),
            evals: vec![0; self.rules.len()],
        }
    }

    /// Reads `json` (an event of `class`) into `scratch` and appends the
    /// indices of the matching rules to `out`. Returns the event view for
    /// reading its id and time.
    ///
    /// Order of `out`: the rules indexed by the key field's value, then the
    /// others, each in rule order.
    pub fn eval<'s>(
        &self,
        class: EventClass,
        json: &'s str,
        scratch: &'s mut Scratch,
        out: &mut Vec<u32>,
    ) -> Result<Event<'s>, JsonError> {
        let Scratch { vals, cands, rest, evals } = scratch;
        vals.reset(json);
        json::extract(json, &self.trie, self.keywords, vals)?;
        let ev = Event { src: json, vals: &*vals };
        let idx = &self.classes[class.index()];
        cands.clear();
        if idx.primary.lookup(&ev, cands) > 1 {
            cands.sort_unstable();
            cands.dedup();
        }
        rest.clear();
        let mut sort = false;
        for k in &idx.secondary {
            sort |= k.lookup(&ev, rest) > 0;
        }
        if sort {
            rest.extend_from_slice(&idx.always);
            rest.sort_unstable();
            rest.dedup();
        } else {
            rest.extend_from_slice(&idx.always);
        }
        for &r in cands.iter().chain(rest.iter()) {
            evals[r as usize] += 1;
            if self.rules[r as usize].matches(&ev) {
                out.push(r);
            }
        }
        Ok(ev)
    }

    /// Like [`RuleSet::eval`] without the index: every rule of the class is
    /// tried, in rule order. For tests that check the index skips no match.
    pub fn eval_unfiltered<'s>(
        &self,
        class: EventClass,
        json: &'s str,
        scratch: &'s mut Scratch,
        out: &mut Vec<u32>,
    ) -> Result<Event<'s>, JsonError> {
        let vals = &mut scratch.vals;
        vals.reset(json);
        json::extract(json, &self.trie, self.keywords, vals)?;
        let ev = Event { src: json, vals: &*vals };
        for &r in &self.classes[class.index()].all {
            if self.rules[r as usize].matches(&ev) {
                out.push(r);
            }
        }
        Ok(ev)
    }

    /// How many rules of `class` are tried on every event (they pin no
    /// field the index can use).
    pub fn unindexed_rules(&self, class: EventClass) -> usize {
        self.classes[class.index()].always.len()
    }

    /// The triggering event id: CloudTrail `eventID`, else EventBridge `id`.
    pub fn event_id<'a>(&self, ev: &Event<'a>) -> Option<&'a str> {
        ev.first(self.meta_fields.event_id).or_else(|| ev.first(self.meta_fields.eb_id))
    }

    /// The event time text: CloudTrail `eventTime`, else EventBridge `time`.
    pub fn event_time<'a>(&self, ev: &Event<'a>) -> Option<&'a str> {
        ev.first(self.meta_fields.event_time).or_else(|| ev.first(self.meta_fields.eb_time))
    }
}

/// A compiled `detection` (or filter): search names, searches, condition.
struct Compiled {
    names: Vec<String>,
    searches: Vec<Search>,
    cond: Cond,
    text: String,
}

/// A filter document and its compiled searches and condition (numbered
/// from 0; shifted after the searches of each rule it joins).
pub(crate) struct Filter<'d> {
    doc: &'d FilterDoc<'d>,
    compiled: Compiled,
}

/// Collects compiled rules and builds the indexes.
pub(crate) struct Builder<'o> {
    opts: &'o CompileOptions,
    pub(crate) fields: FieldTable,
    pub(crate) rules: Vec<DetectionRule>,
    keywords: bool,
    warnings: Vec<RuleWarning>,
    pub(crate) ids: BTreeMap<String, (String, usize)>,
    meta: MetaFields,
}

impl<'o> Builder<'o> {
    pub(crate) fn new(opts: &'o CompileOptions) -> Self {
        let mut fields = FieldTable::new(opts.field_mappings.clone());
        // Interned first, so they are never renamed by field mappings.
        let meta = MetaFields {
            event_name: fields.intern("eventName"),
            event_source: fields.intern("eventSource"),
            event_id: fields.intern("eventID"),
            event_time: fields.intern("eventTime"),
            eb_id: fields.intern("id"),
            eb_time: fields.intern("time"),
            eb_detail_type: fields.intern("detail-type"),
        };
        Builder { opts, fields, rules: Vec::new(), keywords: false, warnings: Vec::new(), ids: BTreeMap::new(), meta }
    }

    pub(crate) fn add_detection(&mut self, d: &DetectionDoc<'_>, filters: &[&Filter<'_>]) -> Result<u32, RuleError> {
        if let Some((file, line)) = self.ids.get(&d.meta.id) {
            return Err(d.doc.error(
                d.doc.line_of("id"),
                format!("duplicate rule id `{}` (first defined at {file}:{line})", d.meta.id),
            ));
        }
        let mut part = self.compile_detection(&d.doc, &d.detection, "detection")?;
        // Each filter: its searches after the rule's, and `and` its
        // condition (its names and `them` only mean its own searches).
        let mut applied = Vec::new();
        for Filter { doc: f, compiled: fp } in filters {
            let offset = part.names.len();
            part.names.extend(fp.names.iter().map(|n| format!("{}/{n}", f.meta.id)));
            part.searches.extend(fp.searches.iter().cloned());
            part.cond = Cond::And(vec![part.cond, fp.cond.clone().offset(offset)]);
            part.text = format!("({}) and ({})", part.text, fp.text);
            applied.push(f.meta.id.clone());
        }
        let classes = self.classes_of(d);
        let idx = self.rules.len() as u32;
        self.ids.insert(d.meta.id.clone(), (d.doc.file.to_string(), d.doc.first_line));
        self.rules.push(DetectionRule {
            meta: d.meta.clone(),
            logsource: d.logsource.clone(),
            classes,
            search_names: part.names,
            searches: part.searches,
            cond: part.cond,
            condition_text: part.text,
            filters: applied,
            tests: d.tests.clone(),
            index_keys: None,
            quiet: false,
        });
        Ok(idx)
    }

    /// After a correlation was refused: the rules it asked to keep quiet stay
    /// quiet (said in a warning), instead of alerting on every match.
    fn keep_quiet(
        &mut self,
        c: &parse::CorrelationDoc<'_>,
        silenced: &[RuleRef],
        correlations: &mut [CorrelationRule],
    ) {
        let mut named = Vec::new();
        for r in silenced {
            let (quiet, id) = match *r {
                RuleRef::Detection(i) => {
                    let r = &mut self.rules[i as usize];
                    (&mut r.quiet, &r.meta.id)
                }
                RuleRef::Correlation(k) => (&mut correlations[k].quiet, &correlations[k].meta.id),
            };
            if !*quiet {
                *quiet = true;
                named.push(format!("`{id}`"));
            }
        }
        if !named.is_empty() {
            self.warnings.push(RuleWarning {
                file: c.doc.file.to_string(),
                line: c.doc.line_of("rules"),
                message: format!(
                    "this correlation was refused; the rules it keeps quiet (`generate: false`) still report nothing \
                     alone: {}",
                    named.join(", ")
                ),
                unread_source: None,
            });
        }
    }

    /// The filter documents that compile, compiled once (their errors and
    /// warnings said once, not for every rule a filter applies to).
    fn compile_filters<'d>(&mut self, docs: &'d [RuleDoc<'d>], errors: &mut Vec<RuleError>) -> Vec<Filter<'d>> {
        let mut ok: Vec<Filter> = Vec::new();
        for d in docs {
            let RuleDoc::Filter(f) = d else { continue };
            if let Some(first) = ok.iter().map(|o| o.doc).find(|o| o.meta.id == f.meta.id) {
                errors.push(f.doc.error(
                    f.doc.line_of("id"),
                    format!(
                        "duplicate filter id `{}` (first defined at {}:{})",
                        f.meta.id, first.doc.file, first.doc.first_line
                    ),
                ));
                continue;
            }
            match self.compile_detection(&f.doc, &f.detection, "filter") {
                Ok(compiled) => ok.push(Filter { doc: f, compiled }),
                Err(e) => errors.push(e),
            }
        }
        ok
    }

    /// The filters that name `det` (by id or name) and whose logsource
    /// covers its own; one that names it but not its logsource is said.
    /// Marks in `used` every filter that names it.
    fn filters_for<'f>(
        &mut self,
        det: &DetectionDoc<'_>,
        filters: &'f [Filter<'f>],
        used: &mut [bool],
    ) -> Vec<&'f Filter<'f>> {
        // A v1 aggregation's searches are its `<id>/match` rule.
        let id = det.meta.id.strip_suffix("/match").unwrap_or(&det.meta.id);
        let names = |r: &String| *r == id || *r == det.meta.id || det.meta.name.as_ref() == Some(r);
        let mut apply = Vec::new();
        for (k, filter) in filters.iter().enumerate() {
            let f = filter.doc;
            if !f.rules.iter().any(names) {
                continue;
            }
            used[k] = true;
            match logsource_conflict(&f.logsource, &det.logsource) {
                None => apply.push(filter),
                Some(why) => self.warnings.push(RuleWarning {
                    file: f.doc.file.to_string(),
                    line: f.doc.line_of("logsource"),
                    message: format!(
                        "filter `{}` is not applied to rule `{}` ({}:{}): {why}",
                        f.meta.id, det.meta.id, det.doc.file, det.doc.first_line
                    ),
                    unread_source: None,
                }),
            }
        }
        apply
    }

    /// A filter that names no detection rule changes nothing: said, with
    /// why when it names a correlation.
    fn warn_unused_filters(&mut self, filters: &[Filter<'_>], used: &[bool], docs: &[RuleDoc<'_>]) {
        for f in filters.iter().zip(used).filter(|(_, u)| !**u).map(|(f, _)| f.doc) {
            let is_correlation = |r: &&String| {
                docs.iter().any(
                    |d| matches!(d, RuleDoc::Correlation(c) if c.meta.id == **r || c.meta.name.as_ref() == Some(*r)),
                )
            };
            let why = match f.rules.iter().find(is_correlation) {
                Some(c) => {
                    format!("names `{c}`, a correlation (a filter applies to the detection rules a correlation counts)")
                }
                None => format!("names no loaded detection rule ({})", f.rules.join(", ")),
            };
            self.warnings.push(RuleWarning {
                file: f.doc.file.to_string(),
                line: f.doc.line_of("rules"),
                message: format!("filter `{}` {why}: it changes nothing", f.meta.id),
                unread_source: None,
            });
        }
    }

    /// The searches and condition of a rule's `detection` (or a filter's
    /// `filter`, `what` says which), compiled.
    fn compile_detection(&mut self, doc: &DocText<'_>, detection: &Mapping, what: &str) -> Result<Compiled, RuleError> {
        let mut ctx = Ctx {
            doc,
            fields: &mut self.fields,
            opts: self.opts,
            keywords_used: false,
            unset_placeholders: Vec::new(),
        };
        let mut names = Vec::new();
        let mut searches = Vec::new();
        let mut conditions: Vec<String> = Vec::new();
        for (k, v) in detection {
            let Some(k) = k.as_str() else {
                return Err(doc.error(doc.line_of(what), format!("{what} keys must be strings")));
            };
            match k {
                "condition" => match v {
                    serde_norway::Value::String(s) => conditions.push(s.clone()),
                    serde_norway::Value::Sequence(items) => {
                        for it in items {
                            match it.as_str() {
                                Some(s) => conditions.push(s.to_string()),
                                None => return Err(doc.error(doc.line_of("condition"), "`condition` must be a string or a list of strings")),
                            }
                        }
                    }
                    _ => return Err(doc.error(doc.line_of("condition"), "`condition` must be a string")),
                },
                "timeframe" => {
                    return Err(doc.error(
                        doc.line_of("timeframe"),
                        "`timeframe` is for a Sigma v1 aggregation (`condition: sel | count() > 5`), and the condition has none: for events that must occur together, write a temporal correlation rule",
                    ))
                }
                _ => {
                    names.push(k.to_string());
                    searches.push(ctx.search(k, v)?);
                }
            }
        }
        if conditions.is_empty() {
            return Err(doc.error(doc.line_of(what), format!("{what} has no `condition`")));
        }
        let mut conds = Vec::new();
        for c in &conditions {
            conds.push(
                condition::parse(c, &names)
                    .map_err(|r| doc.error(doc.line_of("condition"), format!("condition `{c}`: {r}")))?,
            );
        }
        let cond = if conds.len() == 1 { conds.remove(0) } else { Cond::Or(conds) };
        // Read either way here, but pySigma (and so every converter built
        // on it) refuses `AND`: the rule would not leave trailwatch.
        let upper = conditions
            .iter()
            .flat_map(|c| c.split(|ch: char| ch.is_whitespace() || ch == '(' || ch == ')'))
            .find(|w| condition::is_keyword(w) && w.bytes().any(|b| b.is_ascii_uppercase()));
        if let Some(first) = upper {
            self.warnings.push(RuleWarning {
                file: doc.file.to_string(),
                line: doc.line_of("condition"),
                message: format!(
                    "condition keyword `{first}` is read as `{}`; Sigma's keywords are lower case, and pySigma and the \
                     tools built on it refuse other spellings",
                    first.to_ascii_lowercase()
                ),
                unread_source: None,
            });
        }
        self.keywords |= ctx.keywords_used;
        for p in &ctx.unset_placeholders {
            self.warnings.push(RuleWarning {
                file: doc.file.to_string(),
                line: doc.line_containing(&format!("%{p}%")),
                message: format!("placeholder `%{p}%` has no configured values: items using it never match"),
                unread_source: None,
            });
        }
        Ok(Compiled { names, searches, cond, text: conditions.join(" or ") })
    }

    fn classes_of(&mut self, d: &DetectionDoc<'_>) -> u8 {
        let ls = &d.logsource;
        let bit = |c: EventClass| 1u8 << c.index();
        let mut warn = |m: String, source: String| {
            self.warnings.push(RuleWarning {
                file: d.doc.file.to_string(),
                line: d.doc.line_of("logsource"),
                message: m,
                unread_source: Some(source),
            })
        };
        if let Some(p) = &ls.product {
            if !p.eq_ignore_ascii_case("aws") {
                warn(
                    format!("logsource product `{p}` is not aws: the rule never sees an event"),
                    format!("product {p}"),
                );
                return 0;
            }
        }
        // A category with no product (SigmaHQ's `proxy`, `dns`, `firewall`,
        // `webserver`, `antivirus`, ...) names logs of other systems; AWS
        // rules say `product: aws`. Such a rule would otherwise be tried on
        // every event (and its keywords could match CloudTrail text).
        if let (None, Some(c)) = (&ls.product, &ls.category) {
            warn(
                format!("logsource category `{c}` without `product: aws` is not a log trailwatch reads: the rule never sees an event"),
                format!("category {c}"),
            );
            return 0;
        }
        match ls.service.as_deref().map(str::to_ascii_lowercase).as_deref() {
            None => EventClass::ALL.iter().fold(0, |m, c| m | bit(*c)),
            Some("cloudtrail") => bit(EventClass::CloudTrail),
            Some("ecr") => bit(EventClass::Ecr),
            Some("inspector2") | Some("inspector") => bit(EventClass::Inspector2),
            Some("eventbridge") => bit(EventClass::Ecr) | bit(EventClass::Inspector2) | bit(EventClass::EventBridge),
            Some(other) => {
                warn(
                    format!(
                        "logsource service `{other}` is not one trailwatch decodes (cloudtrail, ecr, inspector2, eventbridge): the rule never sees an event"
                    ),
                    format!("service {other}"),
                );
                0
            }
        }
    }

    pub(crate) fn finish(mut self) -> (RuleSet, Vec<RuleWarning>) {
        let mut trie = PathTrie::new();
        for (id, path) in self.fields.paths() {
            trie.insert(path, id);
        }
        let mut classes = Vec::new();
        for class in EventClass::ALL {
            let key_field = match class {
                EventClass::CloudTrail => self.meta.event_name,
                _ => self.meta.eb_detail_type,
            };
            let mut ci = ClassIndex { primary: KeyIndex::new(key_field), ..Default::default() };
            for (i, r) in self.rules.iter_mut().enumerate() {
                if !r.sees(class) {
                    continue;
                }
                ci.all.push(i as u32);
                let keys = required_keys(&r.cond, &r.searches, key_field);
                match &keys {
                    Some(ks) => {
                        for k in ks {
                            ci.primary.add(k, i as u32);
                        }
                    }
                    None => match secondary_keys(r, class, &self.meta) {
                        Some((field, ks)) => {
                            let at = match ci.secondary.iter().position(|k| k.field == field) {
                                Some(at) => at,
                                None => {
                                    ci.secondary.push(KeyIndex::new(field));
                                    ci.secondary.len() - 1
                                }
                            };
                            for k in &ks {
                                ci.secondary[at].add(k, i as u32);
                            }
                        }
                        None => ci.always.push(i as u32),
                    },
                }
                if class == EventClass::CloudTrail || r.index_keys.is_none() {
                    r.index_keys = keys;
                }
            }
            classes.push(ci);
        }
        (
            RuleSet {
                rules: self.rules,
                fields: self.fields,
                trie,
                keywords: self.keywords,
                classes,
                meta_fields: self.meta,
                correlations: Vec::new(),
                det_consumers: Vec::new(),
                corr_consumers: Vec::new(),
                emit: Vec::new(),
                corr_emit: Vec::new(),
                corr_live: Vec::new(),
                select: self.opts.select.clone(),
            },
            self.warnings,
        )
    }
}

/// For a rule that does not pin its class's key field: another field whose
/// values (lowercase) it requires, `eventSource` first for CloudTrail, then
/// the rule's fields in id order. A field with no possible value (an empty
/// set: the rule can never match) wins over every other.
fn secondary_keys(r: &DetectionRule, class: EventClass, meta: &MetaFields) -> Option<(u32, BTreeSet<String>)> {
    let mut fields: BTreeSet<u32> = BTreeSet::new();
    for s in &r.searches {
        for g in &s.groups {
            fields.extend(g.iter().map(|i| i.field).filter(|f| *f != crate::doc::Values::KEYWORDS));
        }
    }
    fields.remove(&meta.event_name);
    fields.remove(&meta.eb_detail_type);
    let mut order: Vec<u32> = Vec::with_capacity(fields.len());
    if class == EventClass::CloudTrail && fields.remove(&meta.event_source) {
        order.push(meta.event_source);
    }
    order.extend(fields);
    let mut best = None;
    for f in order {
        if let Some(ks) = required_keys(&r.cond, &r.searches, f) {
            if ks.is_empty() {
                return Some((f, ks));
            }
            best.get_or_insert((f, ks));
        }
    }
    best
}

/// The set of key-field values (lowercase) without which `cond` cannot hold,
/// or None when the condition does not pin the key field.
/// Why a filter's `logsource` does not cover a rule's: each of product,
/// service and category the filter sets must be the rule's (case aside).
fn logsource_conflict(filter: &LogSource, rule: &LogSource) -> Option<String> {
    let fields = [
        ("product", &filter.product, &rule.product),
        ("service", &filter.service, &rule.service),
        ("category", &filter.category, &rule.category),
    ];
    for (name, f, r) in fields {
        let Some(f) = f else { continue };
        if !r.as_ref().is_some_and(|r| r.eq_ignore_ascii_case(f)) {
            let r = r.as_deref().map_or("none".to_string(), |r| format!("`{r}`"));
            return Some(format!("the filter's logsource {name} is `{f}`, the rule's {r}"));
        }
    }
    None
}

fn required_keys(cond: &Cond, searches: &[Search], key: u32) -> Option<BTreeSet<String>> {
    match cond {
        Cond::Ref(i) => search_keys(&searches[*i], key),
        Cond::Not(_) => None,
        Cond::And(cs) => intersect(cs.iter().map(|c| required_keys(c, searches, key))),
        Cond::Or(cs) => union(cs.iter().map(|c| required_keys(c, searches, key))),
        Cond::AtLeast { n, targets } => {
            let each = targets.iter().map(|t| search_keys(&searches[*t], key));
            if *n == targets.len() {
                intersect(each)
            } else if *n == 1 {
                union(each)
            } else {
                None
            }
        }
    }
}

fn intersect(sets: impl Iterator<Item = Option<BTreeSet<String>>>) -> Option<BTreeSet<String>> {
    let mut acc: Option<BTreeSet<String>> = None;
    for s in sets.flatten() {
        acc = Some(match acc {
            None => s,
            Some(a) => a.intersection(&s).cloned().collect(),
        });
    }
    acc
}

fn union(sets: impl Iterator<Item = Option<BTreeSet<String>>>) -> Option<BTreeSet<String>> {
    let mut acc = BTreeSet::new();
    for s in sets {
        acc.extend(s?);
    }
    Some(acc)
}

fn search_keys(s: &Search, key: u32) -> Option<BTreeSet<String>> {
    let mut acc = BTreeSet::new();
    for group in &s.groups {
        let mut found = None;
        for item in group {
            if item.field != key {
                continue;
            }
            let keys: Option<BTreeSet<String>> = match &item.test {
                Test::Any(pats) => pats
                    .iter()
                    .map(|p| match p {
                        Pat::Str(sp) if sp.op == StrOp::Eq => Some(sp.pat.to_lowercase()),
                        _ => None,
                    })
                    .collect(),
                Test::EqSet(set) => Some(set.iter().map(|s| s.to_string()).collect()),
                Test::Never => Some(BTreeSet::new()),
                _ => None,
            };
            if keys.is_some() {
                found = keys;
                break;
            }
        }
        acc.extend(found?);
    }
    Some(acc)
}
