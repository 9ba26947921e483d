"""The Open Inference Protocol's gRPC messages and service, generated from the .proto here."""
