/** `pullthrough node-setup`: containerd hosts.toml or a CRI-O registries.conf.d drop-in for the fallback chain. */
export { runNodeSetup, type NodeSetupDeps, type NodeSetupResult } from './run.js';
export { renderHostsFiles, checkContainerdConfig, type HostsOptions } from './hosts-toml.js';
export { writeHostsFiles, removeHostsFiles } from './write-hosts.js';
export { renderRegistriesConf, writeDropIn, removeDropIn, DROP_IN_NAME } from './registries-conf.js';
