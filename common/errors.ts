/**
 * The one error table of Berth. Every failure that crosses a boundary (CNI
 * stdout, HTTP body, CLI exit status) is a BerthError whose kind maps, here
 * and nowhere else, to a CNI code, an HTTP status and a CLI exit code.
 *
 * CNI codes 1-7, 11, 50 and 51 are the spec's (CNI SPEC.md "Error"); Berth's
 * own start at 100 and are never reused. docs/errors.md lists them all.
 */

export const ERROR_TABLE = {
  // kind:                 [cni, http, cli exit, stable short message]
  IncompatibleVersion: [1, 400, 2, 'incompatible CNI version'],
  UnsupportedField: [2, 400, 2, 'unsupported field'],
  UnknownContainer: [3, 404, 3, 'unknown container'],
  InvalidEnv: [4, 400, 2, 'invalid environment variable'],
  IO: [5, 500, 1, 'I/O failure'],
  Decode: [6, 400, 2, 'failed to decode content'],
  InvalidConfig: [7, 400, 2, 'invalid network config'],
  TryAgainLater: [11, 503, 5, 'try again later'],
  PluginNotAvailable: [50, 503, 5, 'plugin not available'],
  PluginLimited: [51, 503, 5, 'plugin available, but with limited connectivity'],

  InvalidRequest: [100, 400, 2, 'invalid request'],
  PoolExhausted: [101, 409, 4, 'pool exhausted'],
  LeaseHeldElsewhere: [102, 409, 4, 'lease is bound to another container'],
  PoolNotFound: [103, 404, 3, 'no such pool'],
  LeaseNotFound: [104, 404, 3, 'no such lease'],
  AddressConflict: [105, 409, 4, 'address is leased to another identity'],
  PoolExists: [106, 409, 4, 'pool already exists'],
  Unauthorized: [107, 401, 6, 'missing or invalid bearer token'],
  StoreUnavailable: [108, 503, 5, 'etcd unreachable'],
  Contention: [109, 503, 5, 'too much contention, try again later'],
  Internal: [110, 500, 1, 'internal error'],
  NotFound: [111, 404, 3, 'no such resource'],
  KernelError: [112, 500, 1, 'kernel rejected a network change'],
  CheckFailed: [113, 500, 1, 'attachment does not match the lease'],
  InterfaceConflict: [125, 409, 4, "the identity's address is attached through another interface of this container"],
  PoolOverlap: [114, 409, 4, 'pool overlaps another pool or a host address'],
  PoolInUse: [115, 409, 4, 'pool has bound or pinned leases'],
  HostNotFound: [120, 404, 3, 'no such host'],
  HostAlive: [121, 409, 4, 'host is alive'],
  ContinueExpired: [135, 410, 4, 'listing expired, start it again'],
  MethodNotAllowed: [150, 405, 2, 'method not allowed'],
  RequestTooLarge: [151, 413, 2, 'request too large'],
  UnsupportedMediaType: [152, 415, 2, 'request body must be application/json'],
  RequestTimeout: [153, 408, 5, 'request body not received in time'],
  TlsFailed: [154, 502, 6, 'TLS handshake with the controller failed'],
} as const satisfies Record<string, readonly [number, number, number, string]>;

export type ErrorKind = keyof typeof ERROR_TABLE;

/** Kinds that say something a retry can fix; CNI maps all of them to 11. */
const RETRYABLE: ReadonlySet<ErrorKind> = new Set<ErrorKind>([
  'TryAgainLater',
  'LeaseHeldElsewhere',
  'StoreUnavailable',
  'Contention',
]);

export interface ErrorBody {
  code: ErrorKind;
  cniCode: number;
  msg: string;
  details?: string;
}

export class BerthError extends Error {
  /** Brand instead of instanceof: errors cross module copies and JSON. */
  readonly berth = true as const;
  constructor(
    readonly kind: ErrorKind,
    readonly details?: string,
    msg?: string,
  ) {
    super(msg ?? ERROR_TABLE[kind][3]);
    this.name = `BerthError(${kind})`;
  }
  get retryable(): boolean {
    return RETRYABLE.has(this.kind);
  }
  get cniCode(): number {
    // The spec has one retryable code; Berth's finer kinds stay in details.
    return this.retryable ? ERROR_TABLE.TryAgainLater[0] : ERROR_TABLE[this.kind][0];
  }
  get httpStatus(): number {
    return ERROR_TABLE[this.kind][1];
  }
  get exitCode(): number {
    return ERROR_TABLE[this.kind][2];
  }
  toBody(): ErrorBody {
    const body: ErrorBody = { code: this.kind, cniCode: ERROR_TABLE[this.kind][0], msg: this.message };
    if (this.details !== undefined) body.details = this.details;
    return body;
  }
}

export function isBerthError(e: unknown): e is BerthError {
  return typeof e === 'object' && e !== null && (e as { berth?: unknown }).berth === true;
}

export function isErrorKind(s: unknown): s is ErrorKind {
  return typeof s === 'string' && Object.prototype.hasOwnProperty.call(ERROR_TABLE, s);
}

/** Rebuilds a BerthError from a JSON body received over HTTP or a socket. */
export function fromBody(body: unknown): BerthError {
  const b = body as Partial<ErrorBody> | null;
  if (b && isErrorKind(b.code)) return new BerthError(b.code, b.details, b.msg);
  // A reply that is no error body (a proxy's page, {}, null) still becomes one coded, readable error.
  const text = JSON.stringify(body) ?? String(body);
  return new BerthError('Internal', `not an error body: ${text.length > 200 ? `${text.slice(0, 200)}...` : text}`, 'malformed error reply');
}

/**
 * The single place where foreign errors (etcd3, netlink, fs, sockets) become
 * BerthErrors. Anything unrecognised is Internal, the only kind that logs a stack.
 */
export function castError(e: unknown): BerthError {
  if (isBerthError(e)) return e;
  const err = e as { name?: string; code?: string; message?: string } | null;
  // etcd3's error classes keep name 'Error'; their constructor names are what tell them apart.
  const ctor = (e as { constructor?: { name?: string } } | null)?.constructor?.name ?? '';
  const name = ctor && ctor !== 'Error' && ctor !== 'Object' ? ctor : err?.name ?? '';
  const message = err?.message ?? String(e);
  if (/^(GRPCUnavailableError|GRPCDeadlineExceededError|ClientRuntimeError|GRPCConnectFailedError|BrokenCircuitError|IsolatedCircuitError|GRPCCancelledError)$/.test(name)) {
    return new BerthError('StoreUnavailable', message);
  }
  if (/^GRPC/.test(name) && /unavailable|connect|deadline|timed? ?out/i.test(message) || /circuit breaker is open/.test(message)) {
    return new BerthError('StoreUnavailable', message);
  }
  if (/^Request rejected: E[A-Z]+/.test(message)) return new BerthError('KernelError', message);
  if (err?.code === 'ECONNREFUSED' || err?.code === 'ENOENT' && /connect/.test(message)) {
    return new BerthError('TryAgainLater', message);
  }
  const wrapped = new BerthError('Internal', message);
  if (e instanceof Error && e.stack) wrapped.stack = e.stack;
  return wrapped;
}

