//! `tollgate-policy check FILE...` validates policies the way the filter's
//! `on_configure` does; `tollgate-policy schema` prints the policy's JSON Schema.

use std::process::ExitCode;

use tollgate_engine::Policy;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("schema") => match serde_json::to_string_pretty(&Policy::json_schema()) {
            Ok(text) => {
                println!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("cannot render the schema: {e}");
                ExitCode::FAILURE
            }
        },
        Some("check") if args.len() > 1 => {
            let mut ok = true;
            for file in &args[1..] {
                match std::fs::read_to_string(file) {
                    Err(e) => {
                        eprintln!("{file}: cannot read: {e}");
                        ok = false;
                    }
                    Ok(text) => match Policy::load(&text) {
                        Ok(policy) => println!("{file}: ok ({} routes)", policy.routes.len()),
                        Err(errors) => {
                            ok = false;
                            for error in errors.0 {
                                eprintln!("{file}: {error}");
                            }
                        }
                    },
                }
            }
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        _ => {
            eprintln!("usage: tollgate-policy check FILE... | tollgate-policy schema");
            ExitCode::from(2)
        }
    }
}
