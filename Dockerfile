# Build the manager binary
FROM golang:1.26 AS builder
ARG TARGETOS
ARG TARGETARCH

WORKDIR /workspace
# Copy the Go Modules manifests and cache deps before building and copying source, so that we don't need
# to re-download as much and so that source changes don't invalidate our downloaded layer.
COPY go.mod go.mod
COPY go.sum go.sum
RUN go mod download

COPY cmd/ cmd/
COPY api/ api/
COPY internal/ internal/

# A static binary: CGO disabled, no libc needed in the final stage.
RUN CGO_ENABLED=0 GOOS=${TARGETOS:-linux} GOARCH=${TARGETARCH} go build -trimpath -a -o manager cmd/main.go

# The final stage is FROM scratch, not distroless/static: the project builds the same image without a
# container engine (test/image, `make images`, for containerd on a real node), and distroless would add
# files (passwd, tzdata, its own CA bundle) that the Go-built image cannot reproduce here. The two must
# hold the same files and run the same way: test/image's Dockerfile test checks it, and understands only
# FROM scratch, COPY --from, USER, WORKDIR and ENTRYPOINT in exec form here.
FROM scratch
COPY --from=builder /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=builder /workspace/manager /manager
USER 65532:65532
WORKDIR /

ENTRYPOINT ["/manager"]
