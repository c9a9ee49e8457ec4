/** Reads a stream to its end or its error: the bytes that came before, and the error if any. */
export async function drain(stream: AsyncIterable<unknown>): Promise<{ bytes: Buffer; err?: Error }> {
  const chunks: Buffer[] = [];
  try {
    for await (const c of stream) chunks.push(c as Buffer);
    return { bytes: Buffer.concat(chunks) };
  } catch (err) {
    return { bytes: Buffer.concat(chunks), err: err as Error };
  }
}
