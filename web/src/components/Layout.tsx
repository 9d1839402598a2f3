import type { ComponentChildren } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { live, useLiveState } from '../lib/live';
import { navigate } from '../lib/router';
import { toggleTheme, useTheme } from '../lib/theme';
import { typingInField } from '../lib/hooks';
import { Icon } from './icons';
import { ProjectSwitcher } from './Projects';
import { Kbd, Link } from './ui';

export const NAV = [
  { href: '/', label: 'Overview', icon: 'overview', key: 'o' },
  { href: '/traces', label: 'Traces', icon: 'traces', key: 't' },
  { href: '/analytics', label: 'Analytics', icon: 'analytics', key: 'a' },
  { href: '/failures', label: 'Failures', icon: 'failures', key: 'f' },
  { href: '/live-logs', label: 'Live logs', icon: 'live', key: 'l' },
  { href: '/settings', label: 'Settings', icon: 'settings', key: 's' },
];

function isActive(href: string, path: string) {
  return href === '/' ? path === '/' : path === href || path.startsWith(href + '/');
}

function LiveIndicator() {
  const s = useLiveState();
  const label = s === 'open' ? 'Live' : s === 'connecting' ? 'Connecting…' : 'Offline';
  const title =
    s === 'open'
      ? 'Connected: new traces stream in as they are stored'
      : s === 'connecting'
        ? 'Connecting to the live stream'
        : 'The live stream is down; retrying';
  return (
    <div class={`live-ind live-${s}`} title={title} data-live-state={s}>
      <span class="live-dot" />
      <span>{label}</span>
      {s === 'open' && live.version && <span class="muted">v{live.version}</span>}
    </div>
  );
}

export const SHORTCUTS: [string, string][] = [
  ['g then o / t / a / f / l / s', 'Go to Overview, Traces, Analytics, Failures, Live logs, Settings'],
  ['/', 'Search traces; find spans in a trace'],
  ['j / k or ↓ / ↑', 'Move through a list or the span tree'],
  ['Enter', 'Open the selected trace; expand or collapse a span'],
  ['← / →', 'Collapse a span or go to its parent / expand or go to its first child'],
  ['n / N', 'Next / previous failed span in a trace'],
  ['z / 0', 'Zoom the waterfall to the selected span / show the whole trace (or drag across the axis)'],
  ['Esc', 'Back to the list from a trace; close dialogs'],
  ['Shift + D', 'Switch light / dark theme'],
  ['?', 'Show these shortcuts'],
];

function ShortcutsDialog({ onClose }: { onClose: () => void }) {
  useEffect(() => {
    const f = (e: KeyboardEvent) => {
      if (e.key === 'Escape' || e.key === '?') {
        e.preventDefault();
        e.stopPropagation();
        onClose();
      }
    };
    window.addEventListener('keydown', f, true);
    return () => window.removeEventListener('keydown', f, true);
  }, []);
  return (
    <div class="modal-backdrop" onClick={onClose}>
      <div class="modal panel" role="dialog" aria-modal="true" aria-label="Keyboard shortcuts" onClick={(e) => e.stopPropagation()}>
        <div class="modal-head">
          <h2>Keyboard shortcuts</h2>
          <button class="btn btn-ghost" type="button" onClick={onClose} aria-label="Close">
            <Icon name="x" />
          </button>
        </div>
        <table class="shortcuts">
          <tbody>
            {SHORTCUTS.map(([k, d]) => (
              <tr key={k}>
                <td>
                  <Kbd>{k}</Kbd>
                </td>
                <td>{d}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </div>
  );
}

export function Layout({ path, children }: { path: string; children: ComponentChildren }) {
  const { theme } = useTheme();
  const [help, setHelp] = useState(false);

  useEffect(() => {
    let gPressed = 0;
    const f = (e: KeyboardEvent) => {
      if (e.defaultPrevented || e.metaKey || e.ctrlKey || e.altKey || typingInField(e)) return;
      if (e.key === '?') {
        e.preventDefault();
        setHelp(true);
        return;
      }
      if (e.key === 'D' && e.shiftKey) {
        e.preventDefault();
        toggleTheme();
        return;
      }
      if (e.key === 'g') {
        gPressed = Date.now();
        return;
      }
      if (gPressed && Date.now() - gPressed < 1200) {
        const item = NAV.find((n) => n.key === e.key);
        gPressed = 0;
        if (item) {
          e.preventDefault();
          navigate(item.href);
        }
      }
    };
    window.addEventListener('keydown', f);
    return () => window.removeEventListener('keydown', f);
  }, []);

  return (
    <div class="app">
      <aside class="sidebar">
        <Link href="/" class="brand" aria-label="TraceLLM home">
          <span class="brand-mark">
            <Icon name="logo" size={18} />
          </span>
          <span class="brand-name">TraceLLM</span>
        </Link>
        <ProjectSwitcher />
        <nav class="nav" aria-label="Main">
          {NAV.map((n) => (
            <Link
              key={n.href}
              href={n.href}
              class={'nav-item' + (isActive(n.href, path) ? ' active' : '')}
              aria-current={isActive(n.href, path) ? 'page' : undefined}
              title={`${n.label} (g ${n.key})`}
            >
              <Icon name={n.icon} size={17} />
              <span>{n.label}</span>
            </Link>
          ))}
        </nav>
        <div class="sidebar-foot">
          <LiveIndicator />
          <div class="sidebar-buttons">
            <button
              type="button"
              class="btn btn-ghost btn-icon"
              onClick={toggleTheme}
              title={theme === 'dark' ? 'Switch to light theme (Shift+D)' : 'Switch to dark theme (Shift+D)'}
              aria-label="Toggle theme"
              data-testid="theme-toggle"
            >
              <Icon name={theme === 'dark' ? 'sun' : 'moon'} size={16} />
            </button>
            <button
              type="button"
              class="btn btn-ghost btn-icon"
              onClick={() => setHelp(true)}
              title="Keyboard shortcuts (?)"
              aria-label="Keyboard shortcuts"
            >
              <Icon name="keyboard" size={16} />
            </button>
          </div>
        </div>
      </aside>
      <main class="main" id="main">
        {children}
      </main>
      {help && <ShortcutsDialog onClose={() => setHelp(false)} />}
    </div>
  );
}
