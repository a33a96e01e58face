# The PortMux image: one static binary on a distroless base, as uid 65532,
# no shell. `portmux manager` by default (the in-cluster pod); `serve`,
# `tunnel` and `version` are the other commands.
#
#   make docker-build                       # picks this file or Dockerfile.offline
#   docker build --build-arg VERSION=v0.1.0 -t portmux.local/portmux:0.1.0 .
#
# Both base images are build arguments so that a mirror or a pre-loaded copy
# can stand in for Docker Hub and gcr.io. Without any registry, `make
# docker-build` builds Dockerfile.offline instead (FROM scratch, from the
# binary built on the host).
#
# Written for BuildKit and for the legacy builder alike: no RUN --mount, no
# --platform=$BUILDPLATFORM (cross builds: docker buildx build --platform
# linux/arm64, which sets TARGETOS/TARGETARCH).
ARG GO_IMAGE=golang:1.26
ARG RUNTIME_IMAGE=gcr.io/distroless/static:nonroot

FROM ${GO_IMAGE} AS build
ARG TARGETOS=linux
ARG TARGETARCH
ARG VERSION=dev
WORKDIR /src
# Modules first: this layer is reused until go.mod or go.sum change.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} \
    go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/portmux ./cmd/portmux

# distroless/static:nonroot: CA certificates, tzdata, /etc/passwd with
# nonroot (65532), no shell, no package manager.
FROM ${RUNTIME_IMAGE}
ARG VERSION=dev
LABEL org.opencontainers.image.title="portmux" \
      org.opencontainers.image.description="One port, many protocols: SSH, TLS, HTTP, WebSocket tunnels, OpenVPN on :443" \
      org.opencontainers.image.source="https://github.com/portmux/portmux" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=build /out/portmux /portmux
# Numeric, so that runAsNonRoot can verify it without reading /etc/passwd.
USER 65532:65532
ENTRYPOINT ["/portmux"]
CMD ["manager"]
