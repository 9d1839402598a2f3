// Light and dark themes. The choice (system, light, dark) persists in localStorage; the
// resolved theme is set as data-theme on <html> and the CSS variables follow it.
import { useEffect, useState } from 'preact/hooks';

export type ThemeChoice = 'system' | 'light' | 'dark';
export type Theme = 'light' | 'dark';

const KEY = 'tracellm.theme';
const subs = new Set<() => void>();
const media = typeof matchMedia !== 'undefined' ? matchMedia('(prefers-color-scheme: dark)') : null;

export function getChoice(): ThemeChoice {
  try {
    const v = localStorage.getItem(KEY);
    if (v === 'light' || v === 'dark' || v === 'system') return v;
  } catch {
    /* storage may be disabled */
  }
  return 'system';
}

export function resolvedTheme(): Theme {
  const c = getChoice();
  if (c !== 'system') return c;
  return media?.matches ? 'dark' : 'light';
}

export function applyTheme() {
  document.documentElement.dataset.theme = resolvedTheme();
  for (const s of subs) s();
}

export function setChoice(c: ThemeChoice) {
  try {
    localStorage.setItem(KEY, c);
  } catch {
    /* ignore */
  }
  applyTheme();
}

export function toggleTheme() {
  setChoice(resolvedTheme() === 'dark' ? 'light' : 'dark');
}

media?.addEventListener?.('change', () => applyTheme());

export function useTheme(): { theme: Theme; choice: ThemeChoice } {
  const [, force] = useState(0);
  useEffect(() => {
    const f = () => force((x) => x + 1);
    subs.add(f);
    return () => {
      subs.delete(f);
    };
  }, []);
  return { theme: resolvedTheme(), choice: getChoice() };
}

/** Read a CSS custom property of the current theme (charts need concrete colors). */
export function cssVar(name: string): string {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}
