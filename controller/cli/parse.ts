/**
 * berthctl's argument parsing, pure: durations (`--hold 1h30m`), instants
 * (`--at "yesterday 14:02"`), address lists (`--reserve a,b`). Every function
 * takes `now` where time matters, so tests pin the clock, and every failure is
 * a BerthError('InvalidRequest') naming the offending text (CLI exit 2).
 *
 * Instants without a zone are the operator's local time (TZ), because that is
 * what "yesterday at 14:02" means at a terminal; the API always receives an
 * exact ISO 8601 UTC instant, so the controller's own zone never matters.
 */
import { isIP } from 'node:net';
import { BerthError } from '../../common/errors';

const UNIT_SECONDS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86400, w: 604800 };

/** "3600", "90s", "15m", "1h", "1h30m", "2d" → whole seconds. */
export function parseDuration(text: string): number {
  const s = text.trim().toLowerCase();
  if (/^\d+$/.test(s)) return Number(s);
  const re = /(\d+)([smhdw])/g;
  let total = 0;
  let consumed = 0;
  for (let m = re.exec(s); m !== null; m = re.exec(s)) {
    if (m.index !== consumed) break;
    total += Number(m[1]) * UNIT_SECONDS[m[2]];
    consumed = re.lastIndex;
  }
  if (s === '' || consumed !== s.length) {
    throw new BerthError('InvalidRequest', text, 'a duration is seconds or a sum like 1h30m (units s, m, h, d, w)');
  }
  return total;
}

/** Seconds → the shortest "1h30m" form; 0 → "0s". */
export function formatDuration(seconds: number): string {
  if (seconds <= 0) return '0s';
  let rest = Math.floor(seconds);
  let out = '';
  for (const [unit, size] of [['d', 86400], ['h', 3600], ['m', 60], ['s', 1]] as const) {
    const n = Math.floor(rest / size);
    if (n > 0) { out += `${n}${unit}`; rest -= n * size; }
  }
  return out;
}

const LOCAL_RE = /^(\d{4})-(\d{2})-(\d{2})(?:[ T](\d{1,2}):(\d{2})(?::(\d{2}))?)?$/;
const CLOCK_RE = /^(?:(today|yesterday)\s+)?(\d{1,2}):(\d{2})(?::(\d{2}))?$/;
const AGO_RE = /^(\S+)\s+ago$/;
const ZONED_RE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})$/i;

const INSTANT_HELP = 'a time is ISO 8601 (2026-11-22T14:02:00Z), local "YYYY-MM-DD HH:MM", "[yesterday|today] HH:MM", "now" or "<duration> ago"';

/**
 * Reads an operator's instant and returns it as exact ISO 8601 (UTC).
 * Accepted: zoned ISO 8601; "YYYY-MM-DD[ HH:MM[:SS]]" and "YYYY-MM-DDTHH:MM"
 * in local time; "HH:MM", "today HH:MM", "yesterday HH:MM"; "now";
 * "<duration> ago" (e.g. "90m ago", "1d ago").
 */
export function parseInstant(text: string, now: number = Date.now()): string {
  const s = text.trim();
  const lower = s.toLowerCase();
  const bad = () => new BerthError('InvalidRequest', text, INSTANT_HELP);
  if (lower === 'now') return new Date(now).toISOString();
  const ago = AGO_RE.exec(lower);
  if (ago) {
    let secs: number;
    try { secs = parseDuration(ago[1]); } catch { throw bad(); }
    return new Date(now - secs * 1000).toISOString();
  }
  if (ZONED_RE.test(s)) {
    const ms = Date.parse(s);
    if (Number.isNaN(ms)) throw bad();
    return new Date(ms).toISOString();
  }
  const local = LOCAL_RE.exec(s);
  if (local) {
    const [, y, mo, d, h, mi, se] = local;
    return localInstant(Number(y), Number(mo), Number(d), Number(h ?? 0), Number(mi ?? 0), Number(se ?? 0), bad);
  }
  const clock = CLOCK_RE.exec(lower);
  if (clock) {
    const day = new Date(now);
    if (clock[1] === 'yesterday') day.setDate(day.getDate() - 1);
    return localInstant(day.getFullYear(), day.getMonth() + 1, day.getDate(), Number(clock[2]), Number(clock[3]), Number(clock[4] ?? 0), bad);
  }
  throw bad();
}

function localInstant(y: number, mo: number, d: number, h: number, mi: number, s: number, bad: () => Error): string {
  if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || s > 59) throw bad();
  const t = new Date(y, mo - 1, d, h, mi, s, 0);
  // new Date rolls 2026-02-31 over into March; refuse instead of guessing.
  if (t.getMonth() !== mo - 1 || t.getDate() !== d) throw bad();
  return t.toISOString();
}

export function isIpAddress(text: string): boolean {
  return isIP(text) !== 0;
}

/** "a,b" (and repeated flags, via `previous`) → a list of IP addresses. */
export function parseIpList(text: string, previous: string[] = []): string[] {
  const items = text.split(',').map((s) => s.trim()).filter(Boolean);
  for (const ip of items) if (!isIpAddress(ip)) throw new BerthError('InvalidRequest', ip, 'not an IP address');
  return [...previous, ...items];
}

export function parseIpArg(text: string): string {
  if (!isIpAddress(text.trim())) throw new BerthError('InvalidRequest', text, 'not an IP address');
  return text.trim();
}

export function parsePositiveInt(text: string): number {
  if (!/^\d+$/.test(text.trim()) || Number(text) < 1) throw new BerthError('InvalidRequest', text, 'expected a positive integer');
  return Number(text);
}
