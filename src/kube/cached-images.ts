/**
 * The CachedImage custom resource (pullthrough.dev/v1alpha1, cluster-scoped; the schema is
 * manifests/base/crds.yaml) and the four calls the controller makes on it. Status is written only
 * through the status subresource, as JSON merge patches of the fields that changed.
 */
import * as k8s from '@kubernetes/client-node';
import type { KubeClient } from './client.js';
import { describeKubeError } from './errors.js';
import type { EventTarget } from './event-recorder.js';
import type { PodRef } from './types.js';
import type { ScanStatus } from './scan-status.js';

export const CACHED_IMAGE_GROUP = 'pullthrough.dev';
export const CACHED_IMAGE_VERSION = 'v1alpha1';
export const CACHED_IMAGE_PLURAL = 'cachedimages';

export type CachedImagePhase = 'Pending' | 'Caching' | 'Cached' | 'Failed' | 'Expiring' | 'Evicted';

export interface CachedImageSpec {
  readonly image: string;
  readonly retain?: boolean;
  readonly platforms?: readonly string[];
  readonly pullSecretRef?: { readonly namespace: string; readonly name: string };
  readonly refresh?: string;
}

export interface CachedImageStatus {
  readonly phase?: CachedImagePhase;
  readonly observedGeneration?: number;
  readonly digest?: string;
  readonly size?: number;
  readonly sizeText?: string;
  readonly platforms?: readonly string[];
  readonly usedBy?: { readonly count: number; readonly pods: readonly PodRef[] };
  readonly lastUsed?: string;
  readonly upstreamDigest?: string;
  readonly upToDate?: boolean;
  /** When the origin was last asked which digest the tag names (a refresh). */
  readonly lastChecked?: string;
  readonly message?: string;
  /** The vulnerability scan of `digest` (src/kube/cached-image-scan.ts). */
  readonly scan?: ScanStatus;
}

export interface CachedImage {
  readonly metadata: {
    readonly name: string;
    readonly uid?: string;
    readonly resourceVersion?: string;
    readonly generation?: number;
    readonly creationTimestamp?: string;
    readonly labels?: Record<string, string>;
  };
  readonly spec: CachedImageSpec;
  readonly status?: CachedImageStatus;
}

/** `null` removes a field in a merge patch. */
export type StatusPatch = { readonly [K in keyof CachedImageStatus]?: CachedImageStatus[K] | null };

export interface CachedImageApi {
  list(): Promise<CachedImage[]>;
  /** Creates it; when it exists already, returns the existing one (`created: false`). */
  create(
    name: string,
    spec: CachedImageSpec,
    labels?: Record<string, string>,
  ): Promise<{ readonly object: CachedImage; readonly created: boolean }>;
  patchStatus(name: string, patch: StatusPatch): Promise<CachedImage>;
}

/** A CachedImage as an Event's object: its Events show in `kubectl describe cachedimage`. */
export function cachedImageRef(object: Pick<CachedImage, 'metadata'>): EventTarget {
  return {
    apiVersion: `${CACHED_IMAGE_GROUP}/${CACHED_IMAGE_VERSION}`,
    kind: 'CachedImage',
    name: object.metadata.name,
    ...(object.metadata.uid === undefined ? {} : { uid: object.metadata.uid }),
  };
}

const ref = { group: CACHED_IMAGE_GROUP, version: CACHED_IMAGE_VERSION, plural: CACHED_IMAGE_PLURAL };
const mergePatch = k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch);

export function createCachedImageApi(client: KubeClient): CachedImageApi {
  const api = client.customObjects;
  return {
    async list() {
      const list = (await api.listClusterCustomObject(ref)) as { items?: CachedImage[] };
      return list.items ?? [];
    },
    async create(name, spec, labels) {
      try {
        const object = (await api.createClusterCustomObject({
          ...ref,
          body: {
            apiVersion: `${CACHED_IMAGE_GROUP}/${CACHED_IMAGE_VERSION}`,
            kind: 'CachedImage',
            metadata: { name, ...(labels ? { labels } : {}) },
            spec,
          },
        })) as CachedImage;
        return { object, created: true };
      } catch (err) {
        if (describeKubeError(err).code !== 409) throw err;
        return { object: (await api.getClusterCustomObject({ ...ref, name })) as CachedImage, created: false };
      }
    },
    async patchStatus(name, patch) {
      return (await api.patchClusterCustomObjectStatus(
        { ...ref, name, body: { status: patch } },
        mergePatch,
      )) as CachedImage;
    },
  };
}
