// One WebSocket to /api/ws for the whole app: it reconnects with backoff, keeps a bounded
// log of what it received (for the Live logs page) and fans messages out to subscribers.
import { useEffect, useState } from 'preact/hooks';
import type { TraceSummary } from './api';
import { auth } from './auth';

export type LiveState = 'connecting' | 'open' | 'closed';

export interface LiveMessage {
  type: string;
  trace?: TraceSummary;
  version?: string;
  [k: string]: unknown;
}

export interface LogEntry {
  seq: number;
  at: number;
  msg: LiveMessage;
  raw: string;
}

const MAX_LOG = 5000;

class LiveHub {
  state: LiveState = 'closed';
  version: string | null = null;
  /** how many times the stream came back after the first connection */
  reconnects = 0;
  private everOpened = false;
  log: LogEntry[] = [];
  private seq = 0;
  private ws: WebSocket | null = null;
  private retryMs = 500;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private msgSubs = new Set<(m: LiveMessage) => void>();
  private stateSubs = new Set<() => void>();
  private started = false;

  start() {
    if (this.started || typeof WebSocket === 'undefined') return;
    this.started = true;
    this.connect();
    // Reconnect at once when the tab comes back or the network returns.
    window.addEventListener('online', () => this.kick());
    document.addEventListener('visibilitychange', () => {
      if (document.visibilityState === 'visible') this.kick();
    });
  }

  private kick() {
    if (this.state === 'closed') {
      if (this.timer) clearTimeout(this.timer);
      this.retryMs = 500;
      this.connect();
    }
  }

  private connect() {
    this.timer = null;
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    let ws: WebSocket;
    try {
      // Browsers cannot set headers on a WebSocket: the key goes in the query.
      const key = auth.key;
      // No key for the selected project: a stream without one would be `default`'s.
      if (auth.missingKey) {
        this.setState('closed');
        return;
      }
      ws = new WebSocket(`${proto}//${location.host}/api/ws` + (key ? '?api_key=' + encodeURIComponent(key) : ''));
    } catch {
      this.scheduleReconnect();
      return;
    }
    this.ws = ws;
    this.setState('connecting');
    // A handshake that neither opens nor fails (a stalled proxy) must not leave the
    // dashboard waiting forever: give up on it and try again.
    const stalled = setTimeout(() => {
      if (ws.readyState === WebSocket.CONNECTING) {
        ws.onclose = null;
        ws.close();
        if (this.ws === ws) {
          this.ws = null;
          this.setState('closed');
          this.retryMs = 500;
          this.scheduleReconnect();
        }
      }
    }, 4000);
    ws.onopen = () => {
      clearTimeout(stalled);
      this.retryMs = 500;
      if (this.everOpened) this.reconnects++;
      this.everOpened = true;
      this.setState('open');
    };
    ws.onmessage = (ev) => {
      if (typeof ev.data !== 'string') return;
      let msg: LiveMessage;
      try {
        msg = JSON.parse(ev.data);
      } catch {
        return;
      }
      if (!msg || typeof msg.type !== 'string') return;
      if (msg.type === 'system.connected' && typeof msg.version === 'string') this.version = msg.version;
      this.log.push({ seq: ++this.seq, at: Date.now(), msg, raw: ev.data });
      if (this.log.length > MAX_LOG) this.log.splice(0, this.log.length - MAX_LOG);
      for (const s of this.msgSubs) s(msg);
    };
    ws.onclose = () => {
      clearTimeout(stalled);
      if (this.ws === ws) {
        this.ws = null;
        this.setState('closed');
        this.scheduleReconnect();
      }
    };
    ws.onerror = () => {
      /* onclose follows */
    };
  }

  private scheduleReconnect() {
    if (this.timer) return;
    this.timer = setTimeout(() => this.connect(), this.retryMs);
    this.retryMs = Math.min(this.retryMs * 2, 8000);
  }

  private setState(s: LiveState) {
    this.state = s;
    for (const f of this.stateSubs) f();
  }

  /** Start over with the key in use now (another project was selected): drop the old stream and its log. */
  restart() {
    if (!this.started) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const old = this.ws;
    this.ws = null;
    if (old) {
      old.onclose = null;
      old.onmessage = null;
      old.close();
    }
    this.log = [];
    this.everOpened = false;
    this.retryMs = 500;
    this.connect();
  }

  clearLog() {
    this.log = [];
    for (const f of this.stateSubs) f();
  }

  onMessage(f: (m: LiveMessage) => void) {
    this.msgSubs.add(f);
    return () => {
      this.msgSubs.delete(f);
    };
  }

  onState(f: () => void) {
    this.stateSubs.add(f);
    return () => {
      this.stateSubs.delete(f);
    };
  }
}

export const live = new LiveHub();

export function useLiveState(): LiveState {
  const [s, setS] = useState(live.state);
  useEffect(() => {
    const off = live.onState(() => setS(live.state));
    setS(live.state); // it may have changed between the render and this subscription
    return off;
  }, []);
  return s;
}

/** Subscribe to live messages while the component is mounted. */
export function useLiveMessages(handler: (m: LiveMessage) => void, deps: unknown[] = []) {
  useEffect(() => live.onMessage(handler), deps);
}

/**
 * Run `cb` when the stream comes back after a drop: whatever was stored meanwhile was not
 * announced, so lists reload their first page.
 */
export function useReconnect(cb: () => void) {
  useEffect(() => {
    let seen = live.reconnects;
    return live.onState(() => {
      if (live.state === 'open' && live.reconnects !== seen) {
        seen = live.reconnects;
        cb();
      }
    });
  }, [cb]);
}
