/**
 * A controller configuration for tests: a short Lease and fast passes, so handovers take a second;
 * and its Event recorder, as the controller command builds it.
 */
import type { ControllerConfig } from '../../src/config/controller.js';
import { EventRecorder, silentLogger, type KubeClient } from '../../src/kube/index.js';

export const fastControllerConfig = (identity = 'a', over: Partial<ControllerConfig> = {}): ControllerConfig => ({
  namespace: 'pullthrough',
  leaseName: 'pullthrough-controller',
  identity,
  leaseDurationMs: 1500,
  renewDeadlineMs: 1000,
  retryPeriodMs: 100,
  expireAfterMs: 3_600_000,
  statusWritesPerSecond: 50,
  syncIntervalMs: 50,
  logLevel: 'silent',
  ...over,
});

/** The controller's Events, recorded as `pullthrough-controller` in namespace `pullthrough`. */
export const controllerEvents = (client: KubeClient): EventRecorder =>
  new EventRecorder({ client, namespace: 'pullthrough', component: 'pullthrough-controller', log: silentLogger });
