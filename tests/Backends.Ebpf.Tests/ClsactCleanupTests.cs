using Microsoft.Extensions.Logging.Abstractions;
using ProxyPlanes.Sandbox;
using ProxyPlanes.TestKit;

namespace ProxyPlanes.Backends.Ebpf.Tests;

/// <summary>
/// The clsact path (a kernel without tcx, the VM lane's 6.1): the filters are not pinned, so a cleanup in another
/// process (<c>cleanup --mode=ebpf</c>, a mode switch) must find them in the kernel. Everything in a network
/// namespace the test made, with a veth pair inside it.
/// </summary>
public sealed class ClsactCleanupTests
{
    /// <summary>
    /// Filters attached through the clsact path and never detached (a killed daemon's), one of them attached again
    /// (a restart: replaced in place, not doubled); <see cref="EbpfKernel.RemoveNamespaceState"/>, which knows
    /// nothing of them, deletes every one on both interfaces and both directions. Control: a foreign filter (classic
    /// BPF, priority 1) on the same hook stays.
    /// </summary>
    [KernelFact]
    public async Task RemoveNamespaceState_FromAFreshCaller_DeletesOurClsactFilters_AndNoOtherFilter()
    {
        using var ns = NetworkNamespace.Create($"pp{Random.Shared.Next(0x100000):x5}-cls");
        await Run(ns, "ip", "link", "add", "ppcla", "type", "veth", "peer", "name", "ppclb");
        await Run(ns, "ip", "link", "set", "ppcla", "up");
        await Run(ns, "ip", "link", "set", "ppclb", "up");
        await Run(ns, "tc", "qdisc", "add", "dev", "ppcla", "clsact");
        await Run(ns, "tc", "filter", "add", "dev", "ppcla", "ingress", "prio", "1", "handle", "1", "bpf", "bytecode", "1,6 0 0 0,", "classid", "1:1");

        using var tc = TcPrograms.Load();
        var attachments = new List<TcAttachment>();
        try
        {
            ns.Run(() =>
            {
                foreach (var name in new[] { "ppcla", "ppclb" })
                {
                    attachments.Add(tc.Program(TcPrograms.Ingress).AttachTc(name, TcDirection.Ingress, TcAttachMode.Clsact));
                    attachments.Add(tc.Program(TcPrograms.Egress).AttachTc(name, TcDirection.Egress, TcAttachMode.Clsact));
                }
                // A restart attaching again: the same handle and priority, replaced.
                attachments.Add(tc.Program(TcPrograms.Ingress).AttachTc("ppcla", TcDirection.Ingress, TcAttachMode.Clsact));
            });
            var before = await Filters(ns, "ppcla", "ingress");
            Assert.Single(before, f => f.Contains("handle 0x7070", StringComparison.Ordinal) && f.Contains(TcPrograms.Ingress, StringComparison.Ordinal));
            Assert.Single(before, f => f.Contains("handle 0x1 ", StringComparison.Ordinal));
            Assert.Single(await Filters(ns, "ppclb", "egress"), f => f.Contains("handle 0x7070", StringComparison.Ordinal) && f.Contains(TcPrograms.Egress, StringComparison.Ordinal));

            ns.Run(() => EbpfKernel.RemoveNamespaceState(NullLogger.Instance));

            foreach (var name in new[] { "ppcla", "ppclb" })
            foreach (var direction in new[] { "ingress", "egress" })
                Assert.DoesNotContain(await Filters(ns, name, direction), f => f.Contains("handle 0x7070", StringComparison.Ordinal));
            Assert.Single(await Filters(ns, "ppcla", "ingress"), f => f.Contains("handle 0x1 ", StringComparison.Ordinal));
        }
        finally
        {
            foreach (var attachment in attachments) attachment.Dispose(); // nothing left to delete: ENOENT, ignored
        }
    }

    /// <summary>The filter lines (with a handle) of one hook, as the kernel lists them.</summary>
    private static async Task<List<string>> Filters(NetworkNamespace ns, string device, string direction)
    {
        var shown = await ns.ExecAsync("tc", "filter", "show", "dev", device, direction);
        Assert.True(shown.Succeeded, shown.StandardError);
        return [.. shown.StandardOutput.Split('\n').Where(l => l.Contains("handle", StringComparison.Ordinal))];
    }

    private static async Task Run(NetworkNamespace ns, params string[] command)
    {
        var result = await ns.ExecAsync(command);
        Assert.True(result.Succeeded, $"{string.Join(" ", command)}: {result.StandardError}");
    }
}
