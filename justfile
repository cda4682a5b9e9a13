# Everyday verbs. The README's commands do not need `just`; these are shortcuts.

default: test

# Build everything (release: what training and benchmarks use)
build:
    cargo build --workspace --release

# The whole test suite (needs a wgpu adapter: scripts/install-lavapipe.sh on a machine without a GPU)
test:
    cargo test --workspace

# Kernel tests on the GL backend (llvmpipe), the cross-backend check CI runs
test-gl:
    WGPU_BACKEND=gl cargo test --workspace --test matmul --test elementwise --test loss --test batchnorm --test optim --test lstm --test shaders

# Benchmarks of docs/BENCHMARKS.md, printed with the adapter name
bench:
    cargo run --release -p dni-train -- bench

# Train the main job (Copy task with DNI)
train config="configs/copy.toml":
    cargo run --release -p dni-train -- --config {{config}}

# List GPU adapters
devices:
    cargo run --release -p dni-train -- devices

fmt:
    cargo fmt --all

lint:
    cargo clippy --workspace --all-targets -- -D warnings

# Install Mesa's lavapipe (software Vulkan) on Debian/Ubuntu; needs root
lavapipe:
    bash scripts/install-lavapipe.sh
