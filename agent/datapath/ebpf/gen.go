package ebpf

// The BPF objects are generated from bpf/*.c and committed; `make generate` regenerates
// them and hack/verify-generated.sh fails on a difference.
//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu" -target bpfel -go-package ebpf weft ../../../bpf/weft.c
