using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using ProxyPlanes.Backends.Iptables;
using ProxyPlanes.Backends.Ipvs;
using ProxyPlanes.Backends.Nftables;
using ProxyPlanes.Core.Conntrack;
using ProxyPlanes.Core.Health;
using ProxyPlanes.Core.Http;
using ProxyPlanes.Core.Metrics;
using ProxyPlanes.Core.Proxy;
using ProxyPlanes.Core.Kubernetes;
using ProxyPlanes.Core.Sources;
using ProxyPlanes.Core.Sources.Manifests;

namespace ProxyPlanes;

/// <summary>`proxyplanes run`: the proxy itself.</summary>
public static class RunCommand
{
    public static async Task<int> RunAsync(RunSettings settings)
    {
        var builder = WebApplication.CreateSlimBuilder();
        Logging.Configure(builder.Logging, settings.Verbosity);
        ProxyHttpEndpoints.Listen(builder, settings.MetricsBindAddress, settings.HealthzBindAddress);
        builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = TimeSpan.FromSeconds(5));
        await using var app = builder.Build();
        var logger = app.Services.GetRequiredService<ILoggerFactory>().CreateLogger("proxyplanes");

        using var metrics = new ProxyMetrics();
        var backend = await BackendFactory.CreateAsync(settings.Mode, settings.IptablesVariant, metrics, logger, app.Lifetime.ApplicationStopping, settings.IpvsScheduler);
        await CleanupCommand.CleanOtherModesAsync(settings.Mode, logger, app.Lifetime.ApplicationStopping);
        var controller = new ProxyController(settings.Proxy, backend, metrics, logger);
        await using var healthChecks = new ServiceHealthServer(logger, () => controller.Health.Status().Healthy);
        controller.AfterSync("health check node ports", (_, state, token) =>
            healthChecks.UpdateAsync(ServiceHealthServer.Collect(state), state.Network.NodePortAddresses, token));
        // Stale UDP/SCTP flows to gone endpoints would keep clients talking to nothing.
        var conntrack = new ConntrackCleaner(new ConntrackCommand(), logger);
        controller.AfterSync("conntrack cleanup", conntrack.CleanAsync);
        var conntrackFailures = metrics.Factory.CreateCounter("proxyplanes_conntrack_cleanup_failures_total",
            "Conntrack cleanups that failed after a sync (the rules were in place; stale UDP flows may remain)");
        metrics.Registry.AddBeforeCollectCallback(() => conntrackFailures.IncTo(conntrack.Failures));
        // The Kubernetes API (kubeconfig, or the in-cluster service account) unless manifests are named.
        IObjectSource source = settings.ManifestsPath.Length > 0
            ? new ManifestSource(settings.ManifestsPath, logger)
            : KubernetesSource.Create(settings.Kubeconfig, settings.Proxy.HostName, logger);
        using var ownedSource = source as IDisposable;
        foreach (var field in settings.IgnoredConfigFields)
            logger.LogInformation("--config {File}: {Field} is a kube-proxy field this proxy does not use; ignored", settings.ConfigFile, field);
        ProxyHttpEndpoints.Map(app, settings.MetricsBindAddress, settings.HealthzBindAddress, metrics.Registry, controller.Health, settings.Mode);

        await app.StartAsync();
        logger.LogInformation("proxyplanes {Mode} on node {Node}: serving {Source}; metrics on {Metrics}, health on {Healthz}",
            backend.Mode, settings.Proxy.HostName, settings.ManifestsPath.Length > 0 ? settings.ManifestsPath : "the Kubernetes API", settings.MetricsBindAddress?.ToString() ?? "(off)", settings.HealthzBindAddress?.ToString() ?? "(off)");
        // SIGTERM / SIGINT stop the host; the loop stops with it and the rules stay in place, as
        // with kube-proxy, so traffic keeps flowing while the proxy restarts.
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(app.Lifetime.ApplicationStopping);
        Task[] loops = [source.RunAsync(controller, stop.Token), controller.Runner.RunAsync(stop.Token)];
        try
        {
            // Either loop ending (a signal, or the source failing on bad input) stops the other.
            var first = await Task.WhenAny(loops);
            stop.Cancel();
            await first;
            await Task.WhenAll(loops);
        }
        catch (OperationCanceledException) when (stop.IsCancellationRequested)
        {
        }
        finally
        {
            stop.Cancel();
            await app.StopAsync(CancellationToken.None);
        }
        logger.LogInformation("Stopped; the rules stay in place");
        return 0;
    }
}

/// <summary>Builds the data plane a mode names.</summary>
public static class BackendFactory
{
    public static async Task<IProxyBackend> CreateAsync(string mode, string iptablesVariant, ProxyMetrics metrics, ILogger logger, CancellationToken cancellationToken, string? ipvsScheduler = null)
    {
        switch (mode)
        {
            case "iptables":
                var variant = iptablesVariant switch
                {
                    "nft" => IptablesVariant.Nft,
                    "legacy" => IptablesVariant.Legacy,
                    _ => await IptablesCommandApplier.DetectAsync(IpFamily.IPv4, cancellationToken),
                };
                var families = new List<(IpFamily, IIptablesApplier)> { (IpFamily.IPv4, new IptablesCommandApplier(variant, IpFamily.IPv4)) };
                // Dual-stack where the node can: IPv6 services get ip6tables rules.
                if (await IptablesCommandApplier.IsAvailableAsync(IpFamily.IPv6, variant, cancellationToken))
                    families.Add((IpFamily.IPv6, new IptablesCommandApplier(variant, IpFamily.IPv6)));
                else
                    logger.LogWarning("ip6tables is not usable on this node: IPv6 services are not proxied");
                logger.LogInformation("Using iptables-{Variant}{How} for {Families}", variant.ToString().ToLowerInvariant(),
                    iptablesVariant == "auto" ? " (detected)" : "", string.Join(" and ", families.Select(f => f.Item1)));
                return new IptablesBackend(families, metrics, logger);
            case "nftables":
                var nft = new NftCommandApplier();
                var nftFamilies = new List<IpFamily> { IpFamily.IPv4 };
                if (await nft.IsAvailableAsync(IpFamily.IPv6, cancellationToken)) nftFamilies.Add(IpFamily.IPv6);
                logger.LogInformation("Using nftables tables {Families} proxyplanes", string.Join(" and ", nftFamilies.Select(f => f == IpFamily.IPv4 ? "ip" : "ip6")));
                return new NftablesBackend(nftFamilies, nft, metrics, logger);
            case "ipvs":
                if (await Modes.KernelProblemAsync(mode, cancellationToken) is { } missing) throw new UsageException(missing);
                return await IpvsBackend.CreateAsync(ipvsScheduler, metrics, logger, cancellationToken);
            default:
                throw new UsageException(Modes.Problem(mode) ?? $"--mode={mode} has no backend");
        }
    }
}

public static class Logging
{
    public static void Configure(ILoggingBuilder logging, int verbosity)
    {
        logging.ClearProviders();
        logging.AddSimpleConsole(o =>
        {
            o.SingleLine = true;
            o.TimestampFormat = "HH:mm:ss.fff ";
            o.UseUtcTimestamp = true;
        });
        logging.SetMinimumLevel(verbosity switch { <= 0 => LogLevel.Warning, < 4 => LogLevel.Information, _ => LogLevel.Debug });
        logging.AddFilter("Microsoft", LogLevel.Warning);
    }
}
