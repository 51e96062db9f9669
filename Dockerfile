# syntax=docker/dockerfile:1
#
# uapk-proxy container image: a static binary on distroless, non-root.
#
#   docker build -t registry.example.com/platform/uapk-proxy:0.1.0 --build-arg VERSION=0.1.0 .
#
# The binary embeds the time zone database (rules imports time/tzdata), so
# business-hours windows work without /usr/share/zoneinfo; distroless/static
# brings the CA roots (for an HTTPS --upstream) and /etc/passwd with the
# nonroot user (65532).

# The golang images set GOTOOLCHAIN=local, so the image's Go must be at least
# go.mod's `go` line (1.26.8): `docker pull golang:1.26` for the newest 1.26.x,
# or pin the patch release and a digest for reproducible builds.
FROM golang:1.26 AS build
WORKDIR /src
# Dependencies first, so a source change does not download them again.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" \
      -o /out/uapk-proxy ./cmd/uapk-proxy \
 && mkdir -p /out/var/lib/uapk-proxy

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/uapk-proxy /uapk-proxy
# The default --data-dir is ./data, relative to the working directory: make
# that a directory the nonroot user owns. In Kubernetes a volume is mounted
# at UAPK_DATA_DIR instead (deploy/sidecar); with docker run, mount one here
# (-v uapk-data:/var/lib/uapk-proxy), or the ledger dies with the container.
COPY --from=build --chown=65532:65532 /out/var/lib/uapk-proxy /var/lib/uapk-proxy
WORKDIR /var/lib/uapk-proxy
# Numeric, so the kubelet can check runAsNonRoot against it.
USER 65532:65532
# 8081 sidecar door, 8080 forward (HTTP_PROXY) door, 8090 admin API. All
# three listen on 127.0.0.1 by default; see deploy/sidecar/README.md.
EXPOSE 8081 8080 8090
ENTRYPOINT ["/uapk-proxy"]
CMD ["serve"]
