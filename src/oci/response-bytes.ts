/**
 * An undici interceptor that reports the size of every response body chunk as it arrives, before
 * the request's own consumer sees it: one place that sees all bytes received from registries.
 */
import type { Dispatcher } from 'undici';

export function reportResponseBytes(report: (bytes: number) => void): Dispatcher.DispatcherComposeInterceptor {
  return (dispatch) => (opts, handler) =>
    dispatch(opts, {
      // compose() hands interceptors handlers of undici's current interface (onRequestStart ...).
      onRequestStart: (controller, context) => handler.onRequestStart?.(controller, context),
      onRequestUpgrade: (controller, status, headers, socket) =>
        handler.onRequestUpgrade?.(controller, status, headers, socket),
      onResponseStart: (controller, status, headers, message) =>
        handler.onResponseStart?.(controller, status, headers, message),
      onResponseData: (controller, chunk) => {
        report(chunk.length);
        handler.onResponseData?.(controller, chunk);
      },
      onResponseEnd: (controller, trailers) => handler.onResponseEnd?.(controller, trailers),
      // Not optional: a handler without it would lose the error (undici itself throws then).
      onResponseError: (controller, err) =>
        (handler.onResponseError as NonNullable<typeof handler.onResponseError>)(controller, err),
    });
}
