# quiccast in a container: a static binary on distroless, as a non-root user.
#   docker build --build-arg VERSION=$(git describe --tags --always --dirty) \
#     --build-arg COMMIT=$(git rev-parse HEAD) --build-arg BUILT=$(date -u +%FT%TZ) -t quiccast .
#   docker run --rm quiccast version
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=devel
ARG COMMIT=unknown
ARG BUILT=unknown
RUN CGO_ENABLED=0 go build -trimpath -buildvcs=false \
      -ldflags "-s -w -X github.com/quiccast/quiccast/shared/version.version=${VERSION} -X github.com/quiccast/quiccast/shared/version.commit=${COMMIT} -X github.com/quiccast/quiccast/shared/version.built=${BUILT}" \
      -o /out/quiccast . \
 && /out/quiccast version

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/quiccast /usr/local/bin/quiccast
USER nonroot:nonroot
WORKDIR /home/nonroot
# The ACME account and certificates of an edge with -acme-domain; mount a
# volume here to keep them across containers.
ENV QC_EDGE_ACME_DIR=/home/nonroot/acme
VOLUME ["/home/nonroot/acme"]
# edge: HTTP(S) on TCP and HTTP/3 on UDP; origin: HTTP 7000, relay 7001/udp, RTMP 1935
EXPOSE 8080/tcp 8080/udp 7000/tcp 7001/udp 1935/tcp
ENTRYPOINT ["/usr/local/bin/quiccast"]
CMD ["version"]
