# syntax=docker/dockerfile:1
# Build: docker build -t postback .
# Run:   docker run -p 8080:8080 -v postback-data:/data \
#          -v $PWD/config.yaml:/etc/postback/config.yaml:ro \
#          -e STRIPE_WEBHOOK_SECRET=whsec_... postback
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/postback ./cmd/postback \
 && mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/postback /usr/local/bin/postback
COPY --from=build /src/config.yaml /etc/postback/config.yaml
# The data directory belongs to the nonroot user (65532); a named volume
# mounted there starts with that owner.
COPY --from=build --chown=65532:65532 /out/data /data
ENV POSTBACK_CONFIG=/etc/postback/config.yaml
# The shipped storage.path, ./data/postback.db, is relative to the working
# directory: from / it is /data/postback.db, on the volume. A mounted config
# should keep its database under /data.
WORKDIR /
VOLUME ["/data"]
USER 65532:65532
EXPOSE 8080
# Ready = the store is writable and the dispatcher runs (GET /readyz); the
# image has no shell or curl, so the binary asks. A config that listens
# elsewhere than :8080 sets POSTBACK_ADDR for it.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["/usr/local/bin/postback", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/postback"]
CMD ["serve"]
