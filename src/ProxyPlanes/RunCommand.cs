using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using ProxyPlanes.Core.Proxy;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Iptables;
using ProxyPlanes.Metrics;
using ProxyPlanes.Model;
using ProxyPlanes.NodeTools.Conntrack;
using ProxyPlanes.Sources.Kubernetes;
using ProxyPlanes.Sources.Manifests;
using ProxyPlanes.Web;

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
        var modeOptions = new ProxyModeOptions
        {
            IptablesVariant = settings.IptablesVariant,
            IpvsScheduler = settings.IpvsScheduler,
            IpvsExcludeCidrs = settings.IpvsExcludeCidrs,
            IpvsStrictArp = settings.IpvsStrictArp,
            IpvsTimeouts = settings.IpvsTimeouts,
            BpfFs = settings.BpfFs,
            BpfCgroup = settings.BpfCgroup,
        };
        var backend = (await Modes.CreateAsync(settings.Mode, modeOptions, metrics, logger, app.Lifetime.ApplicationStopping)).Backend;
        await CleanupCommand.CleanOtherModesAsync(settings.Mode, settings.IpvsExcludeCidrs, settings.BpfFs, logger, app.Lifetime.ApplicationStopping);
        var controller = new ProxyController(settings.Proxy, backend, metrics, logger);
        await using var healthChecks = new ServiceHealthServer(logger, () => controller.Health.Status().Healthy);
        controller.AfterSync("health check node ports", (_, state, token) =>
            healthChecks.UpdateAsync(ServiceHealthServer.Collect(state), state.Network.NodePortAddresses, token));
        // Stale UDP/SCTP flows to gone endpoints would keep clients talking to nothing.
        // kube-proxy's conntrack settings, written once at start (a setting that cannot be written is one warning).
        new ConntrackSysctls(logger).Apply(settings.Conntrack.Plan(Environment.ProcessorCount));
        var conntrack = new ConntrackCleaner(new ConntrackCommand(), logger, metrics.ConntrackReconciled);
        controller.AfterSync("conntrack cleanup", (previous, state, changed, token) => conntrack.CleanAsync(previous, state, changed, token));
        metrics.CountConntrackCleanupFailures(() => conntrack.Failures);
        // The Kubernetes API (kubeconfig, or the in-cluster service account) unless manifests are named.
        IObjectSource source = settings.ManifestsPath.Length > 0
            ? new ManifestSource(settings.ManifestsPath, logger)
            : KubernetesSource.Create(settings.Kubeconfig, settings.Proxy.HostName, logger);
        using var ownedSource = source as IDisposable;
        foreach (var field in settings.IgnoredConfigFields)
            logger.LogInformation("--config {File}: {Field} is a kube-proxy field this proxy does not use; ignored", settings.ConfigFile, field);
        ProxyHttpEndpoints.Map(app, settings.MetricsBindAddress, settings.HealthzBindAddress, metrics, controller.Health, settings.Mode, controller);

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
