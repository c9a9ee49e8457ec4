/**
 * A private CA and the serving certificate it signs, so the webhook needs no cert-manager. Node's
 * crypto can generate keys but not certificates; node-forge writes the X.509 (keys come from
 * Node's native generator: forge's pure-JS RSA would take seconds).
 */
import { createPrivateKey, generateKeyPairSync, randomBytes, X509Certificate } from 'node:crypto';
import forge from 'node-forge';

export interface KeyAndCert {
  /** PEM */
  cert: string;
  /** PEM, PKCS#1 or PKCS#8 */
  key: string;
}

export interface CertOptions {
  now?: Date;
  validityDays: number;
}

const DAY_MS = 86_400_000;
/** forge writes CRLF; everything else (and a concatenated bundle) wants LF. */
const lf = (pem: string) => pem.replace(/\r\n/g, '\n');

function rsaKeys(): { privateKey: forge.pki.rsa.PrivateKey; publicKey: forge.pki.rsa.PublicKey; pem: string } {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const pem = privateKey.export({ type: 'pkcs1', format: 'pem' }).toString();
  const forgeKey = forge.pki.privateKeyFromPem(pem);
  return { privateKey: forgeKey, publicKey: forge.pki.setRsaPublicKey(forgeKey.n, forgeKey.e), pem };
}

function newCert(publicKey: forge.pki.PublicKey, o: CertOptions): forge.pki.Certificate {
  const cert = forge.pki.createCertificate();
  cert.publicKey = publicKey;
  // Positive 16-byte serial: a leading zero nibble keeps the DER INTEGER non-negative.
  cert.serialNumber = '0' + randomBytes(16).toString('hex').slice(1);
  const now = o.now ?? new Date();
  // Backdated a little: clocks across a cluster are never quite equal.
  cert.validity.notBefore = new Date(now.getTime() - 5 * 60_000);
  cert.validity.notAfter = new Date(now.getTime() + o.validityDays * DAY_MS);
  return cert;
}

export function createCa(commonName: string, o: CertOptions): KeyAndCert {
  const k = rsaKeys();
  const cert = newCert(k.publicKey, o);
  const subject = [{ name: 'commonName', value: commonName }];
  cert.setSubject(subject);
  cert.setIssuer(subject);
  cert.setExtensions([
    { name: 'basicConstraints', cA: true, critical: true },
    { name: 'keyUsage', keyCertSign: true, cRLSign: true, digitalSignature: true, critical: true },
    { name: 'subjectKeyIdentifier' },
  ]);
  cert.sign(k.privateKey, forge.md.sha256.create());
  return { cert: lf(forge.pki.certificateToPem(cert)), key: k.pem };
}

/** A serving certificate for `dnsNames` (the first is also the CN) and `ipAddresses`, signed by `ca`. */
export function issueServingCert(
  ca: KeyAndCert,
  dnsNames: readonly string[],
  o: CertOptions & { ipAddresses?: readonly string[] },
): KeyAndCert {
  if (dnsNames.length === 0) throw new Error('a serving certificate needs at least one DNS name');
  const caCert = forge.pki.certificateFromPem(ca.cert);
  const caKey = forge.pki.privateKeyFromPem(ca.key);
  const k = rsaKeys();
  const cert = newCert(k.publicKey, o);
  cert.setSubject([{ name: 'commonName', value: dnsNames[0] as string }]);
  cert.setIssuer(caCert.subject.attributes);
  cert.setExtensions([
    { name: 'basicConstraints', cA: false, critical: true },
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
    { name: 'extKeyUsage', serverAuth: true },
    {
      name: 'subjectAltName',
      altNames: [
        ...dnsNames.map((value) => ({ type: 2, value })),
        ...(o.ipAddresses ?? []).map((ip) => ({ type: 7, ip })),
      ],
    },
  ]);
  cert.sign(caKey, forge.md.sha256.create());
  return { cert: lf(forge.pki.certificateToPem(cert)), key: k.pem };
}

export interface CertFacts {
  notBefore: Date;
  notAfter: Date;
  dnsNames: string[];
  isCa: boolean;
}

/** Reads a PEM certificate with Node's own parser; undefined when it is not one. */
export function inspectCert(pem: string): CertFacts | undefined {
  try {
    const c = new X509Certificate(pem);
    const dnsNames = (c.subjectAltName ?? '')
      .split(', ')
      .filter((s) => s.startsWith('DNS:'))
      .map((s) => s.slice(4));
    return { notBefore: new Date(c.validFrom), notAfter: new Date(c.validTo), dnsNames, isCa: c.ca };
  } catch {
    return undefined;
  }
}

/** True when `cert` was signed by `ca` and `key` is the private key of `cert`. */
export function certMatches(cert: string, key: string, ca: string): boolean {
  try {
    const c = new X509Certificate(cert);
    return c.verify(new X509Certificate(ca).publicKey) && c.checkPrivateKey(createPrivateKey(key));
  } catch {
    return false;
  }
}
