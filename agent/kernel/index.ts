/**
 * The agent's kernel layer in one import. Everything here talks netlink
 * (never the `ip` tool); only netns.ts enters namespaces. See
 * docs/dataplane.md for the layout and docs/netns.md for the setns rules.
 */
export { openNetlink, openNetlinkIn, openNetnsFd, isOwnNetns, resolveNetnsPath, warmThreadPool, withNetns, writeSysctl, readSysctl, useProcSysNet } from './netns';
export {
  createVeth, deleteAddress, deleteLink, ensureAddress, ensureBridge, ensureVxlan, getLink, listAddresses, listLinks, setLinkAttrs,
  setUp, vethNameFor, type BridgeSpec, type LinkInfo, type VethSpec, type VxlanSpec,
} from './links';
export {
  deleteFdb, deleteNeigh, deleteRoute, linkIndex, listFdbs, listNeighs, listRoutes, replaceFdb, replaceNeigh, replaceRoute,
} from './routes';
export { apply, observe, DEFAULT_DEVICES, type ApplyResult, type Devices } from './state';
export { addressPod, attachPod, detachPod, drainReaping, plugVeth, type AttachSpec, type Attachment, type Detached, type PlugSpec, type Plugged } from './pod';
export { BERTH_RT_PROTO, KernelError, castNetlinkError, isErrno, type Netlink } from './nl';
