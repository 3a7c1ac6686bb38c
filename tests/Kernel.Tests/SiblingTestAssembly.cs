namespace ProxyPlanes.Kernel.Tests;

/// <summary>Another test project's built assembly, next to this one's output (the VM-lane tests run it in the guest).</summary>
internal static class SiblingTestAssembly
{
    /// <summary>The path of <c>ProxyPlanes.{project}.dll</c> (e.g. "Backends.Ebpf.Tests"); fails the test when it is not built.</summary>
    public static string PathOf(string project)
    {
        var dll = Path.Combine(AppContext.BaseDirectory.Replace("Kernel.Tests", project, StringComparison.Ordinal), $"ProxyPlanes.{project}.dll");
        Assert.True(File.Exists(dll), $"{dll} is not built");
        return dll;
    }
}
