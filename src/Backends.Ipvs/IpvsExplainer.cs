using System.Net;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Iptables;
using ProxyPlanes.Model;
using ProxyPlanes.NodeTools;

namespace ProxyPlanes.Backends.Ipvs;

/// <summary>
/// <c>proxyplanes explain</c> for --mode=ipvs: reads the IPVS table and kube-ipvs0 over netlink, this
/// mode's ipsets (<c>ipset save</c>) and the nat and filter tables (iptables-save of the flavour that holds
/// our chains; ip6tables for IPv6), as a full sync reads them, and traces the packet with <see cref="IpvsTracer"/>.
/// </summary>
public sealed class IpvsExplainer : IKernelExplainer
{
    private readonly IIpvsKernel? _kernel;
    private readonly IReadOnlyList<IpFamily> _families = [IpFamily.IPv4, IpFamily.IPv6];

    /// <summary>The node's kernel, in this process's network namespace.</summary>
    public IpvsExplainer()
    {
    }

    /// <summary>Another kernel (tests: <see cref="FakeIpvsKernel"/>), read for <paramref name="families"/>; it has IPVS.</summary>
    public IpvsExplainer(IIpvsKernel kernel, IReadOnlyList<IpFamily> families)
    {
        _kernel = kernel;
        _families = families;
    }

    private static bool KernelHasIpvs => File.Exists("/proc/net/ip_vs");

    public async Task<bool> HoldsStateAsync(CancellationToken cancellationToken)
    {
        if (_kernel is null && !KernelHasIpvs) return false;
        return await WithKernelAsync(null, async kernel =>
        {
            if (await kernel.LinkExistsAsync(cancellationToken).ConfigureAwait(false)) return true;
            // No families: netlink and ipset only (no iptables tool is needed to tell).
            return (await kernel.ReadAsync([], cancellationToken).ConfigureAwait(false)).Services.Count > 0;
        }).ConfigureAwait(false);
    }

    public async Task<PacketFate> ExplainAsync(PacketQuestion question, CancellationToken cancellationToken)
    {
        var snapshot = await SnapshotAsync(question.Family, cancellationToken).ConfigureAwait(false);
        if (!snapshot.View.LinkExists && snapshot.View.Services.Count == 0)
            return new PacketFate(null, null, PacketVerdict.Pass, [], false, false, $"no IPVS state of ProxyPlanes on this node (no {IpvsNames.Link}, no virtual server)", []);
        var inInterface = _kernel is null ? await InInterfaceAsync(question.Source, snapshot.View, cancellationToken).ConfigureAwait(false) : null;
        return IpvsTracer.Trace(snapshot, question, inInterface);
    }

    public async Task<IReadOnlyList<FrontendFate>> ListAsync(CancellationToken cancellationToken) =>
        IpvsTracer.List(await SnapshotAsync(cancellationToken).ConfigureAwait(false));

    /// <summary>Everything the tracer reads, in one go; what cannot be read is one <see cref="ExplainException"/> line.</summary>
    public Task<IpvsKernelSnapshot> SnapshotAsync(CancellationToken cancellationToken) => SnapshotAsync(null, cancellationToken);

    /// <summary>As <see cref="SnapshotAsync(CancellationToken)"/>, with the tables of one family only when <paramref name="only"/> is given (one question).</summary>
    private async Task<IpvsKernelSnapshot> SnapshotAsync(IpFamily? only, CancellationToken cancellationToken)
    {
        if (_kernel is null && !KernelHasIpvs)
            throw new ExplainException("this kernel has no IPVS (no /proc/net/ip_vs: the ip_vs module is not loaded), so nothing of --mode=ipvs to explain");
        var (variant, ipv4Nat) = _kernel is null ? await VariantAsync(cancellationToken).ConfigureAwait(false) : (IptablesVariant.Nft, null);
        var families = only is { } family ? (IReadOnlyList<IpFamily>)new[] { family }
            : _kernel is null ? await FamiliesAsync(variant, cancellationToken).ConfigureAwait(false)
            : _families;
        return await WithKernelAsync(variant, async kernel =>
        {
            // No families here: the built-in chains' rules a sync reads come with the whole tables below.
            var view = await kernel.ReadAsync([], cancellationToken).ConfigureAwait(false);
            var tables = new Dictionary<IpFamily, IReadOnlyList<SavedTable>>();
            foreach (var family in families)
            {
                // Each tool run is slow where the machine is (the VM lane): the nat table read to find the flavour is used again.
                var nat = family == IpFamily.IPv4 && ipv4Nat is not null ? ipv4Nat : await kernel.SaveIptablesAsync(family, "nat", cancellationToken).ConfigureAwait(false);
                var filter = await kernel.SaveIptablesAsync(family, "filter", cancellationToken).ConfigureAwait(false);
                try
                {
                    tables[family] = [.. IptablesSave.ParseTables(nat), .. IptablesSave.ParseTables(filter)];
                }
                catch (FormatException e)
                {
                    throw new ExplainException($"{IptablesTools.Name(family, variant, "save")}: output not understood: {e.Message}");
                }
            }
            return new IpvsKernelSnapshot(view, tables);
        }).ConfigureAwait(false);
    }

    /// <summary>Runs <paramref name="read"/> on the kernel (a fresh netlink <see cref="IpvsKernel"/> for the node's); its failures become one line.</summary>
    private async Task<T> WithKernelAsync<T>(IptablesVariant? variant, Func<IIpvsKernel, Task<T>> read)
    {
        var owned = _kernel is null ? new IpvsKernel(new IpvsKernelOptions { IptablesVariant = variant ?? IptablesVariant.Nft }) : null;
        try
        {
            return await read(_kernel ?? owned!).ConfigureAwait(false);
        }
        catch (IpvsKernelException e)
        {
            throw new ExplainException($"reading the IPVS state: {e.Message}");
        }
        catch (Exception e) when (e is ProxyPlanes.Netlink.NetlinkException or ProxyPlanes.Netlink.NetlinkProtocolException or CommandException)
        {
            throw new ExplainException($"reading the IPVS state: {e.Message}");
        }
        finally
        {
            owned?.Dispose();
        }
    }

    /// <summary>
    /// The iptables flavour whose nat table holds this mode's chains (the daemon's choice), with that IPv4 nat
    /// table as iptables-save printed it; nft and null when neither does.
    /// </summary>
    private static async Task<(IptablesVariant Variant, string? Ipv4Nat)> VariantAsync(CancellationToken cancellationToken)
    {
        var found = false;
        foreach (var variant in new[] { IptablesVariant.Nft, IptablesVariant.Legacy })
        {
            var tool = IptablesTools.Name(IpFamily.IPv4, variant, "save");
            CommandResult nat;
            try
            {
                nat = await ExternalCommand.RunAsync(tool, ["-t", "nat"], null, TimeSpan.FromMinutes(1), cancellationToken).ConfigureAwait(false);
            }
            catch (Exception e) when (e is System.ComponentModel.Win32Exception or TimeoutException or CommandException)
            {
                continue; // this flavour is not installed or not usable here
            }
            found = true;
            if (nat.Succeeded && nat.StandardOutput.Contains($":{IpvsNames.LoadBalancer} ", StringComparison.Ordinal)) return (variant, nat.StandardOutput);
        }
        if (!found)
            throw new ExplainException("neither iptables-nft-save nor iptables-legacy-save could be run: install the iptables package (IPVS mode's helper rules live there)");
        return (IptablesVariant.Nft, null);
    }

    private static async Task<IReadOnlyList<IpFamily>> FamiliesAsync(IptablesVariant variant, CancellationToken cancellationToken) =>
        await IptablesCommandApplier.IsAvailableAsync(IpFamily.IPv6, variant, cancellationToken).ConfigureAwait(false)
            ? [IpFamily.IPv4, IpFamily.IPv6]
            : [IpFamily.IPv4];

    /// <summary>The link a packet from <paramref name="source"/> arrives on (the route back to it); null for the node's own addresses.</summary>
    private static async Task<string?> InInterfaceAsync(IPAddress? source, IpvsKernelView view, CancellationToken cancellationToken)
    {
        if (source is null || view.NodeAddresses.Contains(source) || view.LinkAddresses.Contains(source) || IPAddress.IsLoopback(source)) return null;
        return await Routes.InterfaceTowardsAsync(source, cancellationToken).ConfigureAwait(false);
    }
}
