/** `pullthrough node-setup`: containerd hosts.toml or a CRI-O registries.conf.d drop-in for the fallback chain. */
export {
  detectRuntime,
  runNodeSetup,
  type NodeReadiness,
  type NodeSetupDeps,
  type NodeSetupResult,
  type NodeSetupStatus,
} from './run.js';
export {
  renderHostsFiles,
  checkContainerdConfig,
  nodePath,
  MARKER as HOSTS_MARKER,
  type HostsOptions,
} from './hosts-toml.js';
export { writeHostsFiles, removeHostsFiles } from './write-hosts.js';
export { renderRegistriesConf, writeDropIn, removeDropIn, DROP_IN_NAME, DROP_IN_MARKER } from './registries-conf.js';
