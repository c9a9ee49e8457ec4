/** A controller configuration for tests: a short Lease and fast passes, so handovers take a second. */
import type { ControllerConfig } from '../../src/config/controller.js';

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
