/**
 * The logger src/kube writes to: the subset of pino it uses, so a pino logger (or a child) can be
 * passed as it is and tests can capture lines. Callers pass objects of non-secret fields only.
 */
export interface KubeLogger {
  debug(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

const noop = (): void => {
  // Silent: the lines go nowhere.
};
export const silentLogger: KubeLogger = { debug: noop, info: noop, warn: noop, error: noop };
