// Turns the flat span list of a trace into a tree, in time linear in the number of spans
// (plus one sort when the spans do not already arrive in start order). Everything is kept in
// typed arrays indexed by the span's position so 10,000+ span traces stay cheap to walk.

export interface SpanInput {
  id: string;
  parent_id?: string | null;
  start_time?: string | null;
  end_time?: string | null;
  latency_ms?: number | null;
  status?: string | null;
  name?: string | null;
  kind?: string | null;
}

export interface SpanTree {
  /** number of spans */
  n: number;
  /** span indices in depth-first pre-order (children in start order) */
  order: Int32Array;
  /** position of each span in `order` */
  pos: Int32Array;
  /** parent span index, -1 for roots */
  parent: Int32Array;
  depth: Int32Array;
  childCount: Int32Array;
  /** number of spans in the subtree rooted at the span, itself included */
  subtreeSize: Int32Array;
  /** start / end in epoch milliseconds */
  start: Float64Array;
  end: Float64Array;
  /** 1 when the span's status is error or it carries an error */
  isError: Uint8Array;
  /** 1 when some descendant (not the span itself) failed */
  errorBelow: Uint8Array;
  /** 0 for a first attempt, k for the k-th retry of a same-named sibling that failed before */
  retry: Int32Array;
  /** 1 when the span has no usable end time (still running or never closed) */
  open: Uint8Array;
  roots: number[];
  /** span indices whose parent_id names a span that is not in the trace */
  orphans: number[];
  minStart: number;
  maxEnd: number;
  maxDepth: number;
  index: Map<string, number>;
}

function parseTime(s: string | null | undefined): number {
  if (!s) return NaN;
  return Date.parse(s);
}

export function buildTree(spans: readonly SpanInput[], errorOf?: (i: number) => boolean): SpanTree {
  const n = spans.length;
  const index = new Map<string, number>();
  const start = new Float64Array(n);
  const end = new Float64Array(n);
  const open = new Uint8Array(n);
  const isError = new Uint8Array(n);
  let minStart = Infinity;
  let maxEnd = -Infinity;

  for (let i = 0; i < n; i++) {
    const s = spans[i];
    if (!index.has(s.id)) index.set(s.id, i);
    const st = parseTime(s.start_time);
    start[i] = st;
    let en = parseTime(s.end_time);
    if (Number.isNaN(en) && s.latency_ms != null && !Number.isNaN(st)) en = st + s.latency_ms;
    if (Number.isNaN(en)) open[i] = 1;
    end[i] = en;
    if (st < minStart) minStart = st;
    if (en > maxEnd) maxEnd = en;
    if (st > maxEnd) maxEnd = st;
    if (s.status === 'error' || (errorOf && errorOf(i))) isError[i] = 1;
  }
  if (!Number.isFinite(minStart)) minStart = 0;
  if (!Number.isFinite(maxEnd)) maxEnd = minStart;
  for (let i = 0; i < n; i++) {
    if (Number.isNaN(start[i])) start[i] = minStart;
    if (open[i]) end[i] = maxEnd;
    if (end[i] < start[i]) end[i] = start[i];
  }

  // Visit spans in start order so that appending to each parent's child list leaves siblings
  // sorted. Spans usually arrive sorted already; checking that is O(n) and skips the sort.
  let byStart: ArrayLike<number>;
  let sorted = true;
  for (let i = 1; i < n; i++) {
    if (start[i] < start[i - 1]) {
      sorted = false;
      break;
    }
  }
  if (sorted) {
    const ident = new Int32Array(n);
    for (let i = 0; i < n; i++) ident[i] = i;
    byStart = ident;
  } else {
    const idx = Array.from({ length: n }, (_, i) => i);
    idx.sort((a, b) => start[a] - start[b] || a - b);
    byStart = idx;
  }

  const parent = new Int32Array(n).fill(-1);
  const firstChild = new Int32Array(n).fill(-1);
  const lastChild = new Int32Array(n).fill(-1);
  const nextSibling = new Int32Array(n).fill(-1);
  const childCount = new Int32Array(n);
  const roots: number[] = [];
  const orphans: number[] = [];

  for (let k = 0; k < n; k++) {
    const i = byStart[k];
    const pid = spans[i].parent_id;
    let p = -1;
    if (pid != null && pid !== '') {
      const found = index.get(pid);
      if (found === undefined) orphans.push(i);
      else if (found !== i) p = found;
    }
    if (p === -1) {
      roots.push(i);
      continue;
    }
    parent[i] = p;
    if (lastChild[p] === -1) firstChild[p] = i;
    else nextSibling[lastChild[p]] = i;
    lastChild[p] = i;
    childCount[p]++;
  }

  // Iterative depth-first pre-order walk (no recursion: a 10,000-deep chain must not overflow).
  const order = new Int32Array(n);
  const pos = new Int32Array(n).fill(-1);
  const depth = new Int32Array(n);
  let written = 0;
  let maxDepth = 0;
  const stack = new Int32Array(n);

  const walkFrom = (root: number, rootDepth: number) => {
    let sp = 0;
    stack[sp++] = root;
    depth[root] = rootDepth;
    while (sp > 0) {
      const v = stack[--sp];
      if (pos[v] !== -1) continue;
      pos[v] = written;
      order[written++] = v;
      if (depth[v] > maxDepth) maxDepth = depth[v];
      // push children in reverse so the earliest child is visited first
      const first = firstChild[v];
      if (first === -1) continue;
      const base = sp;
      for (let c = first; c !== -1; c = nextSibling[c]) {
        if (pos[c] === -1) {
          depth[c] = depth[v] + 1;
          stack[sp++] = c;
        }
      }
      // reverse the pushed range in place
      for (let a = base, b = sp - 1; a < b; a++, b--) {
        const t = stack[a];
        stack[a] = stack[b];
        stack[b] = t;
      }
    }
  };
  for (const r of roots) walkFrom(r, 0);
  // Spans caught in a parent cycle are unreachable from any root: promote them to roots.
  if (written < n) {
    for (let k = 0; k < n; k++) {
      const i = byStart[k];
      if (pos[i] === -1) {
        const p = parent[i];
        if (p !== -1) {
          // detach from the cycle
          parent[i] = -1;
          childCount[p]--;
          unlinkChild(firstChild, nextSibling, p, i);
        }
        roots.push(i);
        walkFrom(i, 0);
      }
    }
  }

  // Subtree sizes and error roll-up in one reverse pre-order pass.
  const subtreeSize = new Int32Array(n).fill(1);
  const errorBelow = new Uint8Array(n);
  for (let k = n - 1; k >= 0; k--) {
    const v = order[k];
    const p = parent[v];
    if (p !== -1) {
      subtreeSize[p] += subtreeSize[v];
      if (isError[v] || errorBelow[v]) errorBelow[p] = 1;
    }
  }

  const retry = computeRetries(spans, n, roots, firstChild, nextSibling, isError);

  return {
    n,
    order,
    pos,
    parent,
    depth,
    childCount,
    subtreeSize,
    start,
    end,
    isError,
    errorBelow,
    retry,
    open,
    roots,
    orphans,
    minStart,
    maxEnd,
    maxDepth,
    index,
  };
}

function unlinkChild(firstChild: Int32Array, nextSibling: Int32Array, p: number, c: number) {
  if (firstChild[p] === c) {
    firstChild[p] = nextSibling[c];
    nextSibling[c] = -1;
    return;
  }
  for (let x = firstChild[p]; x !== -1; x = nextSibling[x]) {
    if (nextSibling[x] === c) {
      nextSibling[x] = nextSibling[c];
      nextSibling[c] = -1;
      return;
    }
  }
}

/**
 * A span is a retry when an earlier sibling of the same kind and name failed: the k-th such
 * repetition after a failure gets retry = k. Linear over all sibling lists.
 */
function computeRetries(
  spans: readonly SpanInput[],
  n: number,
  roots: number[],
  firstChild: Int32Array,
  nextSibling: Int32Array,
  isError: Uint8Array,
): Int32Array {
  const retry = new Int32Array(n);
  const scan = (ids: Iterable<number>) => {
    let seen: Map<string, { failed: boolean; count: number }> | null = null;
    for (const c of ids) {
      const key = (spans[c].kind ?? '') + '\u0000' + (spans[c].name ?? '');
      if (!seen) seen = new Map();
      const prev = seen.get(key);
      if (prev) {
        if (prev.failed) retry[c] = ++prev.count;
        if (isError[c]) prev.failed = true;
      } else {
        seen.set(key, { failed: isError[c] === 1, count: 0 });
      }
    }
  };
  function* children(p: number) {
    for (let c = firstChild[p]; c !== -1; c = nextSibling[c]) yield c;
  }
  scan(roots);
  for (let p = 0; p < n; p++) if (firstChild[p] !== -1 && nextSibling[firstChild[p]] !== -1) scan(children(p));
  return retry;
}

/**
 * The rows shown when the spans in `collapsed` hide their descendants: a walk over the
 * pre-order that skips each collapsed subtree in one step.
 */
export function visibleRows(tree: SpanTree, collapsed: ReadonlySet<number>): Int32Array {
  if (collapsed.size === 0) return tree.order;
  const out = new Int32Array(tree.n);
  let m = 0;
  let k = 0;
  while (k < tree.n) {
    const v = tree.order[k];
    out[m++] = v;
    k += collapsed.has(v) && tree.childCount[v] > 0 ? tree.subtreeSize[v] : 1;
  }
  return out.subarray(0, m);
}

/** Ancestors of a span, nearest first. */
export function ancestors(tree: SpanTree, i: number): number[] {
  const out: number[] = [];
  for (let p = tree.parent[i]; p !== -1; p = tree.parent[p]) out.push(p);
  return out;
}

/** Spans to collapse so that only the first `levels` levels are open (used for huge traces). */
export function collapseBelowDepth(tree: SpanTree, levels: number): Set<number> {
  const out = new Set<number>();
  for (let i = 0; i < tree.n; i++) if (tree.childCount[i] > 0 && tree.depth[i] >= levels) out.add(i);
  return out;
}
