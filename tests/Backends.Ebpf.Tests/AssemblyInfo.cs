// The kernel tests here share the machine's BPF and cgroup state; one at a time keeps them readable.
[assembly: System.Runtime.Versioning.SupportedOSPlatform("linux")]
[assembly: CollectionBehavior(DisableTestParallelization = true)]
