/**
 * The internal CNI result: the CNI 1.x shape (SPEC.md "Success"), produced by
 * the agent and converted to the requested cniVersion only on output.
 */

export interface CniInterface {
  name: string;
  mac?: string;
  mtu?: number;
  /** Netns path for container interfaces; absent for host-side ones. */
  sandbox?: string;
}

export interface CniIpConfig {
  /** CIDR notation: 198.18.0.5/16. */
  address: string;
  gateway?: string;
  /** Index into interfaces. */
  interface?: number;
}

export interface CniRoute {
  dst: string;
  gw?: string;
  mtu?: number;
}

export interface CniDns {
  nameservers?: string[];
  domain?: string;
  search?: string[];
  options?: string[];
}

export interface CniResult {
  cniVersion?: string;
  interfaces?: CniInterface[];
  ips?: CniIpConfig[];
  routes?: CniRoute[];
  dns?: CniDns;
}
