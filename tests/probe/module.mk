# tests/probe/: kvm-probe, a tiny real-mode guest (see kvm_probe.c).
KVM_PROBE := $(BUILD)/tests/kvm-probe
TEST_PROGRAMS += $(KVM_PROBE)

$(KVM_PROBE): $(BUILD)/obj/tests/probe/kvm_probe.o
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^
