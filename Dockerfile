# syntax=docker/dockerfile:1
# Build a static veer and run it as a non-root user.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# The release build: static, stripped, and with Go's netpoll running the
# connections one epoll_wait finds ready in the order they became ready
# (cmd/veer-build, internal/gobuild). `-stock` builds with Go as it is.
RUN go run ./cmd/veer-build -o /out/veer
# The example config, listening on all interfaces inside the container. The
# admin API stays on loopback: set admin.listen and admin.token_file in your
# own config (mounted at /etc/veer/veer.yaml) to expose it.
RUN mkdir -p /out/etc /out/state && sed -e 's|^listen: 127.0.0.1:8080|listen: 0.0.0.0:8080|' \
      -e 's|^state_file: veer-state.json|state_file: /var/lib/veer/veer-state.json|' example.yaml > /out/etc/veer.yaml \
    && /out/veer validate -config /out/etc/veer.yaml

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/veer /usr/local/bin/veer
COPY --from=build /out/etc/veer.yaml /etc/veer/veer.yaml
COPY --from=build --chown=nonroot:nonroot /out/state /var/lib/veer
WORKDIR /var/lib/veer
USER nonroot:nonroot
# 8080: the proxy; 9901: admin API, /metrics and the dashboard.
EXPOSE 8080 9901
ENTRYPOINT ["/usr/local/bin/veer"]
CMD ["serve", "-config", "/etc/veer/veer.yaml"]
