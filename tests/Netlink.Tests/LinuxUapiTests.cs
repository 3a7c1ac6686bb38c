using System.Diagnostics;
using System.Reflection;
using System.Text;

namespace ProxyPlanes.Netlink.Tests;

/// <summary>
/// Every constant of <see cref="LinuxUapi"/> against the kernel headers installed on this machine
/// (linux-libc-dev): a C program prints each value, compiled with the system's C compiler.
/// </summary>
public sealed class LinuxUapiTests
{
    /// <summary>C expressions for the few constants that are not macros or enum values of that name.</summary>
    private static readonly Dictionary<string, string> Expressions = new()
    {
        ["IFINFOMSG_LEN"] = "sizeof(struct ifinfomsg)",
        ["IFADDRMSG_LEN"] = "sizeof(struct ifaddrmsg)",
        ["NFGENMSG_LEN"] = "sizeof(struct nfgenmsg)",
        ["INET_DIAG_SOCKID_LEN"] = "sizeof(struct inet_diag_sockid)",
        ["INET_DIAG_REQ_V2_LEN"] = "sizeof(struct inet_diag_req_v2)",
        ["INET_DIAG_MSG_LEN"] = "sizeof(struct inet_diag_msg)",
    };

    [HeadersFact]
    public void Constants_MatchTheKernelHeaders()
    {
        var constants = typeof(LinuxUapi).GetNestedTypes()
            .SelectMany(t => t.GetFields(BindingFlags.Public | BindingFlags.Static).Where(f => f.IsLiteral).Select(f => (Group: t.Name, Field: f)))
            .Where(c => c.Field.FieldType != typeof(string))
            .ToList();
        var program = new StringBuilder("""
            #include <stdio.h>
            #include <errno.h>
            #include <sys/socket.h>
            #include <netinet/in.h>
            #include <netinet/tcp.h>
            #include <linux/netlink.h>
            #include <linux/sock_diag.h>
            #include <linux/inet_diag.h>
            #include <linux/genetlink.h>
            #include <linux/rtnetlink.h>
            #include <linux/if.h>
            #include <linux/if_link.h>
            #include <linux/if_addr.h>
            #include <linux/ip_vs.h>
            #include <linux/netfilter.h>
            #include <linux/netfilter/nfnetlink.h>
            #include <linux/netfilter/nf_tables.h>
            #include <linux/netfilter/nf_nat.h>
            int main(void) {

            """);
        foreach (var (_, field) in constants)
        {
            var cast = field.FieldType == typeof(byte) ? "unsigned char" : field.FieldType == typeof(ushort) ? "unsigned short" : field.FieldType == typeof(uint) ? "unsigned int" : "int";
            var expression = Expressions.GetValueOrDefault(field.Name, field.Name);
            program.Append($"  printf(\"%s=%lld\\n\", \"{field.Name}\", (long long)({cast})({expression}));\n");
        }
        program.Append("  return 0;\n}\n");

        var directory = Directory.CreateTempSubdirectory("proxyplanes-uapi-");
        try
        {
            var source = Path.Combine(directory.FullName, "uapi.c");
            var binary = Path.Combine(directory.FullName, "uapi");
            File.WriteAllText(source, program.ToString());
            var (compiled, compilerOutput) = Run("cc", "-o", binary, source);
            Assert.True(compiled, $"the C program did not compile:\n{compilerOutput}");
            var (ran, output) = Run(binary);
            Assert.True(ran, output);
            var kernel = output.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => l.Split('=')).ToDictionary(p => p[0], p => long.Parse(p[1]));
            var mismatches = constants
                .Where(c => kernel[c.Field.Name] != Convert.ToInt64(c.Field.GetRawConstantValue()))
                .Select(c => $"{c.Group}.{c.Field.Name}: ours {c.Field.GetRawConstantValue()}, kernel {kernel[c.Field.Name]}")
                .ToList();
            Assert.True(mismatches.Count == 0, string.Join("\n", mismatches));
            Assert.True(constants.Count > 150);
        }
        finally
        {
            directory.Delete(recursive: true);
        }
        Assert.Equal("IPVS", LinuxUapi.IpVs.IPVS_GENL_NAME);
    }

    private static (bool Ok, string Output) Run(string file, params string[] args)
    {
        var start = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var arg in args) start.ArgumentList.Add(arg);
        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEnd();
        process.WaitForExit();
        return (process.ExitCode == 0, stdout.Result + stderr);
    }
}

/// <summary>Runs only where the kernel headers and a C compiler are installed (skipped elsewhere, with the reason).</summary>
public sealed class HeadersFactAttribute : FactAttribute
{
    public HeadersFactAttribute()
    {
        if (!File.Exists("/usr/include/linux/ip_vs.h"))
            Skip = "needs the kernel UAPI headers (apt-get install linux-libc-dev)";
        else if (!Environment.GetEnvironmentVariable("PATH")!.Split(':').Any(d => File.Exists(Path.Combine(d, "cc"))))
            Skip = "needs a C compiler (cc) to read the kernel headers' values";
    }
}
