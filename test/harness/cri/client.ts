/**
 * A CRI RuntimeService client over containerd's unix socket, speaking gRPC
 * as kubelet does (runtime.proto beside this file, loaded at run time with
 * @grpc/proto-loader). Fields are camelCase; enums are their names. A failed
 * call rejects with CriError, whose `line` is the text kubelet logs for it:
 * `rpc error: code = <Code> desc = <message>`.
 */
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { join } from 'node:path';

/** dist/test/harness/cri/client.js -> test/harness/cri/runtime.proto */
const PROTO = join(__dirname, '../../../../test/harness/cri/runtime.proto');

export interface PortMapping { protocol?: 'TCP' | 'UDP' | 'SCTP'; containerPort: number; hostPort: number; hostIp?: string }
export interface PodSandboxConfig {
  metadata: { name: string; uid: string; namespace: string; attempt?: number };
  hostname?: string;
  logDirectory?: string;
  dnsConfig?: { servers?: string[]; searches?: string[]; options?: string[] };
  portMappings?: PortMapping[];
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  linux?: { cgroupParent?: string; securityContext?: { namespaceOptions?: { network?: string; pid?: string; ipc?: string } } };
}
export interface PodSandboxStatus {
  id: string;
  metadata: { name: string; uid: string; namespace: string; attempt: number };
  state: 'SANDBOX_READY' | 'SANDBOX_NOTREADY';
  network: { ip: string; additionalIps: { ip: string }[] } | null;
  annotations: Record<string, string>;
}
export interface RuntimeCondition { type: string; status: boolean; reason: string; message: string }

export class CriError extends Error {
  /** What kubelet logs for this failure: grpc-go's text of the status. */
  readonly line: string;

  constructor(readonly method: string, readonly code: grpc.status, readonly details: string) {
    const line = `rpc error: code = ${codeName(code)} desc = ${details}`;
    super(`${method}: ${line}`);
    this.line = line;
  }
}

/** grpc-go's spelling of a status code (OK, Unknown, DeadlineExceeded, …). */
function codeName(c: grpc.status): string {
  return grpc.status[c].toLowerCase().replace(/(^|_)([a-z])/g, (_m, _u, ch: string) => ch.toUpperCase());
}

let definition: grpc.GrpcObject | undefined;

export class CriClient {
  private readonly stub: grpc.Client & Record<string, Function>;

  constructor(readonly socket: string, private readonly timeoutMs = 60_000) {
    definition ??= grpc.loadPackageDefinition(protoLoader.loadSync(PROTO, { keepCase: false, enums: String, longs: String, defaults: true, oneofs: true }));
    const Service = (definition.runtime as grpc.GrpcObject).v1 as grpc.GrpcObject;
    const Ctor = (Service.RuntimeService as grpc.ServiceClientConstructor);
    this.stub = new Ctor(`unix://${socket}`, grpc.credentials.createInsecure()) as grpc.Client & Record<string, Function>;
  }

  private call<T>(method: string, req: object): Promise<T> {
    return new Promise((resolve, reject) => {
      this.stub[method](req, { deadline: Date.now() + this.timeoutMs }, (err: grpc.ServiceError | null, res: T) => {
        if (err) reject(new CriError(method, err.code, err.details));
        else resolve(res);
      });
    });
  }

  async runPodSandbox(config: PodSandboxConfig): Promise<string> {
    return (await this.call<{ podSandboxId: string }>('RunPodSandbox', { config })).podSandboxId;
  }

  async stopPodSandbox(id: string): Promise<void> {
    await this.call('StopPodSandbox', { podSandboxId: id });
  }

  async removePodSandbox(id: string): Promise<void> {
    await this.call('RemovePodSandbox', { podSandboxId: id });
  }

  async podSandboxStatus(id: string): Promise<{ status: PodSandboxStatus; info: Record<string, string> }> {
    return this.call('PodSandboxStatus', { podSandboxId: id, verbose: true });
  }

  async listPodSandbox(): Promise<{ id: string; state: string; metadata: PodSandboxStatus['metadata'] }[]> {
    return (await this.call<{ items: { id: string; state: string; metadata: PodSandboxStatus['metadata'] }[] }>('ListPodSandbox', {})).items;
  }

  async status(): Promise<{ conditions: RuntimeCondition[]; info: Record<string, string> }> {
    const r = await this.call<{ status: { conditions: RuntimeCondition[] }; info: Record<string, string> }>('Status', { verbose: true });
    return { conditions: r.status?.conditions ?? [], info: r.info };
  }

  /** Status' NetworkReady condition. */
  async networkReady(): Promise<boolean> {
    return (await this.status()).conditions.find((c) => c.type === 'NetworkReady')?.status === true;
  }

  close(): void {
    this.stub.close();
  }
}
