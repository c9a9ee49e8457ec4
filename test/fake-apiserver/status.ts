/** metav1.Status bodies, as the API server sends with every error. */
export interface StatusBody {
  kind: 'Status';
  apiVersion: 'v1';
  metadata: Record<string, never>;
  status: 'Failure';
  message: string;
  reason: string;
  code: number;
  details?: { name?: string; kind?: string };
}

export function status(
  code: number,
  reason: string,
  message: string,
  details?: { name?: string; kind?: string },
): StatusBody {
  return {
    kind: 'Status',
    apiVersion: 'v1',
    metadata: {},
    status: 'Failure',
    message,
    reason,
    code,
    ...(details ? { details } : {}),
  };
}

export const notFound = (kind: string, name: string): StatusBody =>
  status(404, 'NotFound', `${kind.toLowerCase()}s "${name}" not found`, { name, kind: kind.toLowerCase() + 's' });

export const alreadyExists = (kind: string, name: string): StatusBody =>
  status(409, 'AlreadyExists', `${kind.toLowerCase()}s "${name}" already exists`, {
    name,
    kind: kind.toLowerCase() + 's',
  });

export const conflict = (kind: string, name: string): StatusBody =>
  status(
    409,
    'Conflict',
    `Operation cannot be fulfilled on ${kind.toLowerCase()}s "${name}": the object has been modified; ` +
      'please apply your changes to the latest version and try again',
    { name, kind: kind.toLowerCase() + 's' },
  );

/** What a watch or list from a compacted resourceVersion gets: the informer's cue to relist. */
export const expired = (rv: string): StatusBody => status(410, 'Expired', `too old resource version: ${rv}`);
