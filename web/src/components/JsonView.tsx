// A collapsible JSON tree. Large arrays and long strings are cut with a control to show the
// rest, so a multi-megabyte payload never renders in one go.
import { useState } from 'preact/hooks';
import { CopyButton } from './ui';

const ARRAY_PAGE = 100;
const STRING_CUT = 600;

function Str({ s }: { s: string }) {
  const [full, setFull] = useState(false);
  if (s.length <= STRING_CUT || full) return <span class="j-str">{JSON.stringify(s)}</span>;
  return (
    <span class="j-str">
      {JSON.stringify(s.slice(0, STRING_CUT))}
      <button type="button" class="link-btn" onClick={() => setFull(true)}>
        … {s.length - STRING_CUT} more chars
      </button>
    </span>
  );
}

function Prim({ v }: { v: unknown }) {
  if (v === null) return <span class="j-null">null</span>;
  if (typeof v === 'string') return <Str s={v} />;
  if (typeof v === 'number') return <span class="j-num">{String(v)}</span>;
  if (typeof v === 'boolean') return <span class="j-bool">{String(v)}</span>;
  return <span>{String(v)}</span>;
}

function Node({ k, v, depth, openDepth, last }: { k?: string; v: unknown; depth: number; openDepth: number; last: boolean }) {
  const isArr = Array.isArray(v);
  const isObj = v !== null && typeof v === 'object';
  const [open, setOpen] = useState(depth < openDepth);
  const [limit, setLimit] = useState(ARRAY_PAGE);
  const keyEl = k !== undefined ? <span class="j-key">{JSON.stringify(k)}: </span> : null;
  const comma = last ? '' : ',';
  if (!isObj) {
    return (
      <div class="j-line">
        {keyEl}
        <Prim v={v} />
        {comma}
      </div>
    );
  }
  const entries: [string, unknown][] = isArr
    ? (v as unknown[]).map((x, i) => [String(i), x])
    : Object.entries(v as Record<string, unknown>);
  const [o, c] = isArr ? ['[', ']'] : ['{', '}'];
  if (entries.length === 0)
    return (
      <div class="j-line">
        {keyEl}
        {o + c}
        {comma}
      </div>
    );
  if (!open)
    return (
      <div class="j-line">
        <button type="button" class="j-toggle" aria-expanded="false" onClick={() => setOpen(true)}>
          ▸
        </button>
        {keyEl}
        <button type="button" class="j-summary" onClick={() => setOpen(true)}>
          {o} {entries.length} {isArr ? (entries.length === 1 ? 'item' : 'items') : entries.length === 1 ? 'key' : 'keys'} {c}
        </button>
        {comma}
      </div>
    );
  const shown = entries.slice(0, limit);
  return (
    <div class="j-block">
      <div class="j-line">
        <button type="button" class="j-toggle" aria-expanded="true" onClick={() => setOpen(false)}>
          ▾
        </button>
        {keyEl}
        {o}
      </div>
      <div class="j-children">
        {shown.map(([ck, cv], i) => (
          <Node key={ck} k={isArr ? undefined : ck} v={cv} depth={depth + 1} openDepth={openDepth} last={i === entries.length - 1} />
        ))}
        {entries.length > limit && (
          <button type="button" class="link-btn" onClick={() => setLimit(limit + ARRAY_PAGE * 5)}>
            show {Math.min(ARRAY_PAGE * 5, entries.length - limit)} more of {entries.length - limit}
          </button>
        )}
      </div>
      <div class="j-line">
        {c}
        {comma}
      </div>
    </div>
  );
}

export function JsonView({ value, openDepth = 2, copy = true }: { value: unknown; openDepth?: number; copy?: boolean }) {
  return (
    <div class="json-view">
      {copy && (
        <div class="json-copy">
          <CopyButton text={() => safeStringify(value)} label="Copy JSON" />
        </div>
      )}
      <Node v={value} depth={0} openDepth={openDepth} last />
    </div>
  );
}

export function safeStringify(v: unknown, indent = 2): string {
  try {
    return JSON.stringify(v, null, indent) ?? 'undefined';
  } catch {
    return String(v);
  }
}

/** Strings as readable text, everything else as a JSON tree. */
export function ValueView({ value }: { value: unknown }) {
  if (value === undefined) return <span class="muted">—</span>;
  if (typeof value === 'string') return <TextBlock text={value} />;
  return <JsonView value={value} />;
}

export function TextBlock({ text, cut = 4000 }: { text: string; cut?: number }) {
  const [full, setFull] = useState(false);
  const long = text.length > cut && !full;
  return (
    <div class="text-block">
      {long ? text.slice(0, cut) + '…' : text}
      {long && (
        <div>
          <button type="button" class="link-btn" onClick={() => setFull(true)}>
            Show all {text.length.toLocaleString()} characters
          </button>
        </div>
      )}
    </div>
  );
}
