// Command kubectl-kubervisor is the `kubectl kubervisor` plugin (SPEC §7): it lists KubervisorServices,
// shows one with its pods, and activates or deactivates the selector of the Service it supervises. This
// file only wires flags and the client; the logic is in internal/plugin.
package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/kubervisor/kubervisor/internal/plugin"
)

func main() {
	// Errors are returned and printed once below; controller-runtime's own logs would only add noise.
	logf.SetLogger(zap.New(zap.WriteTo(io.Discard)))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRootCommand(os.Stdout).ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

// kubeFlags are kubectl's connection flags (--kubeconfig, --context, -n/--namespace, --server, --token,
// --as, --request-timeout, …) from k8s.io/cli-runtime, resolved the way kubectl resolves them.
type kubeFlags struct {
	config *genericclioptions.ConfigFlags
}

func (f *kubeFlags) bind(cmd *cobra.Command) {
	f.config = genericclioptions.NewConfigFlags(true)
	f.config.AddFlags(cmd.PersistentFlags())
}

// connect builds the plugin and the namespace of the request from the parsed flags.
func (f *kubeFlags) connect(out io.Writer) (*plugin.Plugin, string, error) {
	loader := f.config.ToRawKubeConfigLoader()
	if name := ptr.Deref(f.config.Context, ""); name != "" {
		// clientcmd reports an unknown context among other validation errors; say it plainly.
		raw, err := loader.RawConfig()
		if err != nil {
			return nil, "", fmt.Errorf("loading kubeconfig: %w", err)
		}
		if _, ok := raw.Contexts[name]; !ok {
			known := slices.Sorted(maps.Keys(raw.Contexts))
			if len(known) == 0 {
				known = append(known, "none")
			}
			return nil, "", fmt.Errorf("context %q not found in kubeconfig (contexts: %s)", name, strings.Join(known, ", "))
		}
	}
	cfg, err := f.config.ToRESTConfig()
	if err != nil {
		return nil, "", fmt.Errorf("loading kubeconfig: %w", err)
	}
	cfg.UserAgent = "kubectl-kubervisor"
	namespace, _, err := loader.Namespace()
	if err != nil {
		return nil, "", fmt.Errorf("reading the namespace from kubeconfig: %w", err)
	}
	scheme, err := plugin.NewScheme()
	if err != nil {
		return nil, "", err
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, "", fmt.Errorf("creating the API client: %w", err)
	}
	return &plugin.Plugin{Client: c, Out: out, Clock: clock.RealClock{}}, namespace, nil
}

func newRootCommand(out io.Writer) *cobra.Command {
	var kf kubeFlags
	var allNamespaces bool
	list := func(cmd *cobra.Command, _ []string) error {
		p, ns, err := kf.connect(out)
		if err != nil {
			return err
		}
		return p.List(cmd.Context(), ns, allNamespaces)
	}
	// onOne runs a subcommand that takes the name of one KubervisorService.
	onOne := func(run func(p *plugin.Plugin, ctx context.Context, ns, name string) error) func(*cobra.Command, []string) error {
		return func(cmd *cobra.Command, args []string) error {
			p, ns, err := kf.connect(out)
			if err != nil {
				return err
			}
			return run(p, cmd.Context(), ns, args[0])
		}
	}

	root := &cobra.Command{
		Use:   "kubervisor",
		Short: "Inspect KubervisorServices and switch Kubervisor on or off for a Service",
		Long: "Inspect KubervisorServices and switch Kubervisor on or off for a Service.\n\n" +
			"With no subcommand, lists the KubervisorServices of the namespace.",
		Annotations:   map[string]string{cobra.CommandDisplayNameAnnotation: "kubectl kubervisor"},
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE:          list,
	}
	root.CompletionOptions.DisableDefaultCmd = true
	kf.bind(root)
	const allUsage = "List the KubervisorServices of every namespace."
	root.Flags().BoolVarP(&allNamespaces, "all-namespaces", "A", false, allUsage)

	listCmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List KubervisorServices with their pod counts and conditions",
		Example: "  kubectl kubervisor list -n shop\n  kubectl kubervisor list -A",
		Args:    cobra.NoArgs,
		RunE:    list,
	}
	listCmd.Flags().BoolVarP(&allNamespaces, "all-namespaces", "A", false, allUsage)

	getCmd := &cobra.Command{
		Use:     "get NAME",
		Short:   "Show a KubervisorService: conditions, breakers, and its pods with what the activator will do next",
		Example: "  kubectl kubervisor get pricer -n shop",
		Args:    cobra.ExactArgs(1),
		RunE:    onOne((*plugin.Plugin).Get),
	}
	activateCmd := &cobra.Command{
		Use:     "activate NAME",
		Short:   `Add kubervisor/traffic: "yes" to the selector of the Service the KubervisorService supervises`,
		Example: "  kubectl kubervisor activate pricer -n shop",
		Args:    cobra.ExactArgs(1),
		RunE:    onOne((*plugin.Plugin).Activate),
	}
	deactivateCmd := &cobra.Command{
		Use:     "deactivate NAME",
		Short:   "Remove kubervisor/traffic from the selector of the Service the KubervisorService supervises",
		Example: "  kubectl kubervisor deactivate pricer -n shop",
		Args:    cobra.ExactArgs(1),
		RunE:    onOne((*plugin.Plugin).Deactivate),
	}
	root.AddCommand(listCmd, getCmd, activateCmd, deactivateCmd)
	return root
}
