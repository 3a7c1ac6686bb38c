using System.Globalization;

namespace ProxyPlanes.VmLane;

/// <summary>The lane from a shell (vm/run.sh): run a command, or dotnet test a built assembly, in the VM.</summary>
internal static class Program
{
    private const string Usage = """
        usage: vm/run.sh [options] -- COMMAND...          run a shell command in the VM as root
               vm/run.sh [options] test DLL [--filter EXPR] [--results DIR] [-- DOTNET-TEST-ARGS...]
               vm/run.sh info                              the kernel and the initramfs (built if needed)
        options: --timeout SECONDS (default 600)  --memory MIB (3072)  --cpus N (2)
                 --lane DIR (keep the lane share: stdout, stderr, console.log, exit-code)  --console (print the console log)
        A command's own exit code is returned; 124 when the run timed out. `test` returns 0 when all tests passed.
        """;

    public static async Task<int> Main(string[] args)
    {
        try
        {
            return await RunAsync(args);
        }
        catch (Exception e) when (e is VmLaneException or ArgumentException or FileNotFoundException or FormatException)
        {
            Console.Error.WriteLine($"vmlane: {e.Message}");
            return 2;
        }
    }

    private static async Task<int> RunAsync(string[] args)
    {
        var options = VmLaneOptions.Default;
        var timeout = TimeSpan.FromSeconds(600);
        var printConsole = false;
        string? filter = null, results = null;
        var positional = new List<string>();
        var rest = new List<string>();
        for (var i = 0; i < args.Length; i++)
        {
            string Value() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value");
            switch (args[i])
            {
                case "--": rest.AddRange(args[(i + 1)..]); i = args.Length; break;
                case "--timeout": timeout = TimeSpan.FromSeconds(double.Parse(Value(), CultureInfo.InvariantCulture)); break;
                case "--memory": options = options with { MemoryMiB = int.Parse(Value(), CultureInfo.InvariantCulture) }; break;
                case "--cpus": options = options with { Cpus = int.Parse(Value(), CultureInfo.InvariantCulture) }; break;
                case "--lane": options = options with { LaneDirectory = Value() }; break;
                case "--console": printConsole = true; break;
                case "--filter": filter = Value(); break;
                case "--results": results = Value(); break;
                case "-h" or "--help": Console.WriteLine(Usage); return 0;
                default:
                    if (args[i].StartsWith('-')) throw new ArgumentException($"unknown option {args[i]}\n{Usage}");
                    positional.Add(args[i]);
                    break;
            }
        }

        using var cts = new CancellationTokenSource();
        Console.CancelKeyPress += (_, e) => { e.Cancel = true; cts.Cancel(); };

        switch (positional.FirstOrDefault())
        {
            case null when rest.Count > 0:
            {
                var result = await VmLane.RunAsync(string.Join(' ', rest), timeout, options, cts.Token);
                Console.Out.Write(result.StandardOutput);
                Console.Error.Write(result.StandardError);
                if (printConsole) Console.Error.Write(result.ConsoleLog);
                Console.Error.WriteLine($"vmlane: {(result.TimedOut ? "timed out" : $"exit code {result.ExitCode}")} in {result.Elapsed.TotalSeconds:F1} s "
                    + $"(guest: boot {result.BootTime?.TotalSeconds:F1} s, command {result.CommandTime?.TotalSeconds:F1} s; kernel {result.KernelRelease})");
                return result.TimedOut ? 124 : result.ExitCode ?? 1;
            }
            case "test" when positional.Count == 2:
            {
                results ??= Directory.CreateTempSubdirectory("proxyplanes-vm-test-").FullName;
                var test = await VmLane.RunDotnetTestAsync(positional[1], filter, results, timeout, options, rest, cts.Token);
                Console.Out.Write(test.Run.StandardOutput);
                Console.Error.Write(test.Run.StandardError);
                if (printConsole) Console.Error.Write(test.Run.ConsoleLog);
                Console.Error.WriteLine($"vmlane: {(test.Run.TimedOut ? "timed out" : $"dotnet test exit code {test.Run.ExitCode}")} in {test.Run.Elapsed.TotalSeconds:F1} s; "
                    + $"{test.Total} total, {test.Passed} passed, {test.Failed} failed, {test.NotExecuted} not executed; results in {results}");
                return test.Succeeded ? 0 : 1;
            }
            case "info" when positional.Count == 1:
            {
                var kernel = options.Kernel ?? VmKernel.FindNewest();
                var cache = options.CacheDirectory ?? Initramfs.DefaultCacheDirectory();
                var image = await BootImage.EnsureAsync(kernel, cache, cts.Token);
                var initramfs = await Initramfs.EnsureAsync(kernel, cache, cts.Token);
                Console.WriteLine($"kernel     {kernel.Release} ({kernel.ImagePath})");
                Console.WriteLine($"boots      {image}");
                Console.WriteLine($"initramfs  {initramfs}");
                Console.WriteLine($"modules    {string.Join(' ', Initramfs.ResolveModules(kernel).Select(m => m.Name))}");
                return 0;
            }
            default:
                Console.Error.WriteLine(Usage);
                return 2;
        }
    }
}
