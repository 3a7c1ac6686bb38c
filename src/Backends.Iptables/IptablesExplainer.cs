using System.Net;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Iptables;
using ProxyPlanes.Model;
using ProxyPlanes.NodeTools;

namespace ProxyPlanes.Backends.Iptables;

/// <summary>
/// <c>proxyplanes explain</c> for --mode=iptables: reads nat and filter with iptables-save (the
/// flavour, nft or legacy, that holds our chains; ip6tables for an IPv6 question) and traces the
/// packet through them with <see cref="IptablesTracer"/>.
/// </summary>
public sealed class IptablesExplainer : IKernelExplainer
{
    public async Task<bool> HoldsStateAsync(CancellationToken cancellationToken)
    {
        foreach (var family in new[] { IpFamily.IPv4, IpFamily.IPv6 })
            if (await ReadAsync(family, cancellationToken).ConfigureAwait(false) is not null) return true;
        return false;
    }

    public async Task<PacketFate> ExplainAsync(PacketQuestion question, CancellationToken cancellationToken)
    {
        var tables = await ReadAsync(question.Family, cancellationToken).ConfigureAwait(false);
        if (tables is null)
            return new PacketFate(null, null, PacketVerdict.Pass, [], false, false, $"no {IptablesTools.Base(question.Family)} rules of ProxyPlanes on this node", []);
        return IptablesTracer.Trace(tables, question, await NodeAsync(question.Source, cancellationToken).ConfigureAwait(false));
    }

    public async Task<IReadOnlyList<FrontendFate>> ListAsync(CancellationToken cancellationToken)
    {
        var node = await NodeAsync(null, cancellationToken).ConfigureAwait(false);
        var all = new List<FrontendFate>();
        foreach (var family in new[] { IpFamily.IPv4, IpFamily.IPv6 })
            if (await ReadAsync(family, cancellationToken).ConfigureAwait(false) is { } tables)
                all.AddRange(IptablesTracer.List(tables, node, family));
        return all;
    }

    /// <summary>nat and filter of the flavour that holds our KUBE-SERVICES and KUBE-NODEPORTS chains in nat; null when neither does.</summary>
    private static async Task<IReadOnlyList<SavedTable>?> ReadAsync(IpFamily family, CancellationToken cancellationToken)
    {
        foreach (var variant in new[] { IptablesVariant.Nft, IptablesVariant.Legacy })
        {
            var tool = IptablesTools.Name(family, variant, "save");
            CommandResult nat;
            try
            {
                nat = await ExternalCommand.RunAsync(tool, ["-t", "nat"], null, TimeSpan.FromMinutes(1), cancellationToken).ConfigureAwait(false);
            }
            catch (Exception e) when (e is System.ComponentModel.Win32Exception or TimeoutException or CommandException)
            {
                continue; // this flavour is not installed or not usable here
            }
            // KUBE-NODEPORTS too: IPVS mode has a KUBE-SERVICES chain in nat as well, but never this one.
            if (!nat.Succeeded || !nat.StandardOutput.Contains($":{ChainNames.Services} ", StringComparison.Ordinal)
                || !nat.StandardOutput.Contains($":{ChainNames.NodePorts} ", StringComparison.Ordinal)) continue;
            var filter = await ExternalCommand.RunCheckedAsync(tool, ["-t", "filter"], null, cancellationToken).ConfigureAwait(false);
            try
            {
                return [.. IptablesSave.ParseTables(nat.StandardOutput), .. IptablesSave.ParseTables(filter.StandardOutput)];
            }
            catch (FormatException e)
            {
                throw new ExplainException($"{tool}: output not understood: {e.Message}");
            }
        }
        return null;
    }

    /// <summary>This node's addresses, and the interface a packet from <paramref name="source"/> arrives on (the route back to it).</summary>
    private static async Task<TraceNode> NodeAsync(IPAddress? source, CancellationToken cancellationToken)
    {
        var local = NodeAddresses.ReadLocalAddresses().ToHashSet();
        return source is null || local.Contains(source)
            ? new TraceNode(local)
            : new TraceNode(local, await Routes.InterfaceTowardsAsync(source, cancellationToken).ConfigureAwait(false));
    }
}
