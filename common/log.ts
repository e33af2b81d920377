/**
 * Structured logs: one JSON object per line on stderr. Small on purpose, so
 * the CNI plugin can use it without paying for a logging library at start-up.
 */
export type Level = 'debug' | 'info' | 'warn' | 'error';
const RANK: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export interface Logger {
  debug(msg: string, fields?: object): void;
  info(msg: string, fields?: object): void;
  warn(msg: string, fields?: object): void;
  error(msg: string, fields?: object): void;
  child(fields: object): Logger;
}

export function createLogger(base: object = {}, opts: { level?: Level; write?: (line: string) => void } = {}): Logger {
  const min = RANK[opts.level ?? ((process.env.BERTH_LOG_LEVEL as Level) || 'info')] ?? RANK.info;
  const write = opts.write ?? ((line: string) => process.stderr.write(line));
  const emit = (level: Level, msg: string, fields?: object) => {
    if (RANK[level] < min) return;
    write(`${JSON.stringify({ time: new Date().toISOString(), level, msg, ...base, ...fields })}\n`);
  };
  return {
    debug: (m, f) => emit('debug', m, f),
    info: (m, f) => emit('info', m, f),
    warn: (m, f) => emit('warn', m, f),
    error: (m, f) => emit('error', m, f),
    child: (fields) => createLogger({ ...base, ...fields }, opts),
  };
}

export const silentLogger: Logger = { debug() {}, info() {}, warn() {}, error() {}, child: () => silentLogger };
