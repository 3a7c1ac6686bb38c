using ProxyPlanes.Sandbox;

namespace ProxyPlanes.TestKit;

/// <summary>
/// A child cgroup v2 directory this test made (never the root), named after the test process: removed on
/// dispose, after moving any process still in it to the parent. <see cref="EbpfPlace"/> adds the daemon's
/// view of it and a bpffs.
/// </summary>
public sealed class TestCgroup(string suffix) : SandboxCgroup($"pp-ebpf-test-{Environment.ProcessId}-{suffix}");

/// <summary>A directory with a private bpf filesystem mounted on it: unmounted and removed on dispose.</summary>
public sealed class TestBpfFs : BpfFsMount;
