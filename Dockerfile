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
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/postback ./cmd/postback

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/postback /usr/local/bin/postback
COPY --from=build /src/config.yaml /etc/postback/config.yaml
ENV POSTBACK_CONFIG=/etc/postback/config.yaml
# storage.path in the mounted config should point under /data.
VOLUME ["/data"]
WORKDIR /data
USER nonroot:nonroot
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/postback"]
CMD ["serve"]
