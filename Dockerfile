# One image for every subcommand: pullthrough proxy | webhook | node-setup.
#   docker build -t ghcr.io/pullthrough/pullthrough:0.1.0 .
# Node 26 is the current LTS line (Active LTS since 2026-10-28); package.json asks for >= 20.18.

FROM node:26-trixie-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build

FROM node:26-trixie-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund --ignore-scripts && npm cache clean --force

FROM node:26-trixie-slim
ENV NODE_ENV=production
WORKDIR /app
# A fixed numeric user, so runAsNonRoot can verify it (the manifests run it as 10001).
RUN groupadd --system --gid 10001 pullthrough && useradd --system --uid 10001 --gid 10001 --no-create-home pullthrough
COPY --from=deps /app/node_modules ./node_modules
COPY --from=build /src/dist ./dist
COPY package.json ./
USER 10001:10001
EXPOSE 7439 8443
# A 1 MiB young generation: collected often, so the buffers of a stream in flight are given back
# within a few MiB instead of tens (peak RSS streaming a 1 GiB blob ~120 -> ~97 MiB). The same
# flags as `npm start`, which the benchmark runs (test/manifests/node-flags.test.ts).
ENTRYPOINT ["node", "--max-semi-space-size=1", "/app/dist/main.js"]
CMD ["proxy"]
