/** `pullthrough node-setup`: containerd hosts.toml for the fallback chain. */
export { runNodeSetup, type NodeSetupDeps, type NodeSetupResult } from './run.js';
export { renderHostsFiles, checkContainerdConfig, type HostsOptions } from './hosts-toml.js';
export { writeHostsFiles, removeHostsFiles } from './write-hosts.js';
